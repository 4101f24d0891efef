import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HeartbeatBuffer } from "../../server/domain/heartbeat-buffer";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeVms } from "../fixtures";

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(() => t.drop());

const reading = (i: number) => ({
  index: 0,
  uuid: `GPU-${i}`,
  name: "NVIDIA A10G",
  temperatureC: 40 + i,
  utilizationPct: i,
  memoryUsedMiB: 100 * i,
  memoryTotalMiB: 23_028,
  powerDrawW: 60,
  healthy: true,
  reasons: [],
});

describe("the buffered heartbeat flush", () => {
  it("is made of heap-only (HOT) updates, which touch no index of vms", async () => {
    const fleet = await makeFleet(t.db);
    const list = await makeVms(t.db, fleet, 40, "ready");
    // One plain postgres.js connection (not configured by Drizzle), so that its statistics can be
    // flushed and read back.
    const sql = postgres(t.url, { max: 1, onnotice: () => {} });
    try {
      const buffer = new HeartbeatBuffer(
        sql,
        { flushMs: 60_000, sampleIntervalS: 0 },
        "agent shutting down",
      );
      const rounds = async (n: number) => {
        for (let round = 0; round < n; round++) {
          const at = new Date(Date.now() + round);
          list.forEach((vm, i) => {
            buffer.put(vm.id, "boot-1", [reading(i + round)], at);
          });
          await buffer.flush();
        }
      };
      const counters = async () => {
        await sql`SELECT pg_stat_force_next_flush()`;
        await sql`SELECT pg_stat_clear_snapshot()`;
        const [row] = await sql<{ upd: number; hot: number }[]>`
          SELECT n_tup_upd::int AS upd, n_tup_hot_upd::int AS hot
          FROM pg_stat_user_tables WHERE relname = 'vms'`;
        return row ?? { upd: 0, hot: 0 };
      };
      // The first rounds move rows to pages with room; after that every flush stays on its page.
      await rounds(6);
      const before = await counters();
      await rounds(5);
      let after = await counters();
      for (let i = 0; i < 50 && after.upd - before.upd < 5 * list.length; i++) {
        await new Promise((r) => setTimeout(r, 100));
        after = await counters();
      }
      const upd = after.upd - before.upd;
      const hot = after.hot - before.hot;
      expect(upd).toBe(5 * list.length);
      // With an index on a column the flush writes, this is 0.
      expect(hot / upd).toBeGreaterThanOrEqual(0.9);
    } finally {
      await sql.end({ timeout: 5 });
    }
  });
});
