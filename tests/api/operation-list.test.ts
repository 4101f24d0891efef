import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Fleet, users } from "../../server/db/schema";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser } from "../fixtures";
import { apiClient } from "./harness";

type Row = {
  id: string;
  kind: string;
  status: string;
  fleetName: string;
  requestedByEmail: string | null;
};
type Page = { rows: Row[]; nextCursor: string | null };

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let admin: typeof users.$inferSelect;
let a: Fleet;
let b: Fleet;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  admin = await makeUser(t.db, "admin");
  a = await makeFleet(t.db);
  b = await makeFleet(t.db);
  // 12 finished operations on fleet a, all created in the same microsecond (ties broken by id),
  // and 3 on fleet b; one of b's failed.
  await t.db.execute(sql`
    INSERT INTO operations (fleet_id, kind, status, requested_by, created_at)
    SELECT ${a.id}, (CASE WHEN g % 3 = 0 THEN 'fleet.scale' ELSE 'vm.reboot' END)::operation_kind,
      'succeeded', ${admin.id}, '2026-01-01T00:00:00.123456Z'
    FROM generate_series(1, 12) g`);
  await t.db.execute(sql`
    INSERT INTO operations (fleet_id, kind, status, created_at)
    VALUES (${b.id}, 'fleet.create', 'succeeded', '2026-01-02T00:00:00Z'),
           (${b.id}, 'fleet.scale', 'failed', '2026-01-03T00:00:00Z'),
           (${b.id}, 'fleet.scale', 'succeeded', '2026-01-04T00:00:00Z')`);
});
afterAll(() => t.drop());

async function list(input: Record<string, unknown>): Promise<Page> {
  const res = await api.query("operation.list", input, { userId: admin.id });
  expect(res.status, JSON.stringify(res.error)).toBe(200);
  return res.data as Page;
}

describe("operation.list", () => {
  it("pages newest first with a cursor, each operation once, across equal timestamps", async () => {
    const seen: Row[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < 20; i++) {
      const page = await list({ limit: 4, ...(cursor ? { cursor } : {}) });
      seen.push(...page.rows);
      if (!page.nextCursor) break;
      cursor = page.nextCursor;
    }
    expect(seen).toHaveLength(15);
    expect(new Set(seen.map((r) => r.id)).size).toBe(15);
    expect(seen.slice(0, 3).map((r) => r.fleetName)).toEqual([b.name, b.name, b.name]);
    expect(seen[3]?.requestedByEmail).toBe(admin.email);
  });

  it("filters by fleet, status and kind together", async () => {
    expect((await list({ fleetId: a.id })).rows).toHaveLength(12);
    expect((await list({ fleetId: a.id, kind: ["fleet.scale"] })).rows).toHaveLength(4);
    const failed = await list({ status: ["failed"], kind: ["fleet.scale"] });
    expect(failed.rows.map((r) => [r.fleetName, r.status])).toEqual([[b.name, "failed"]]);
    expect((await list({ fleetId: b.id, kind: ["vm.reboot"] })).rows).toEqual([]);
  });

  it("refuses an unknown kind or a malformed cursor with a 400", async () => {
    for (const bad of [
      { kind: ["fleet.explode"] },
      { cursor: "nope" },
      { kind: Array(6).fill("vm.reboot") },
    ]) {
      const res = await api.query("operation.list", bad, { userId: admin.id });
      expect(res.status, JSON.stringify(bad)).toBe(400);
    }
  });
});
