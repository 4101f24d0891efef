import { createServer } from "node:net";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatabase } from "../../server/db/client";
import { fleets, operations } from "../../server/db/schema";
import { isDatabaseError, renderMetrics, scrapeAllowed } from "../../server/metrics";
import { createTestDatabase, type TestDatabase } from "../db";
import { heartbeatInput, makeAgent, makeFleet, makeUser, makeVms } from "../fixtures";
import { apiClient } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
});
afterAll(() => t?.drop());

/** Every sample of the text format as { name, labels, value }. */
function samples(text: string) {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m?.[1]) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1] as string] = l[2] as string;
    }
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample with this name and these labels (0 when there is none). */
async function value(name: string, labels: Record<string, string> = {}) {
  const { body } = await renderMetrics(t.db);
  const found = samples(body).filter(
    (s) =>
      s.name === name &&
      Object.keys(labels).length === Object.keys(s.labels).length &&
      Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  expect(found.length).toBeLessThanOrEqual(1);
  return found[0]?.value ?? 0;
}

describe("scrapeAllowed", () => {
  const token = "a-metrics-token-of-some-length";
  it("is off without a token, and lets only the exact bearer token through", () => {
    expect(scrapeAllowed(`Bearer ${token}`, undefined)).toBe("off");
    expect(scrapeAllowed(`Bearer ${token}`, token)).toBe("ok");
    expect(scrapeAllowed(null, token)).toBe("denied");
    expect(scrapeAllowed(token, token)).toBe("denied");
    expect(scrapeAllowed(`Bearer ${token}x`, token)).toBe("denied");
    expect(scrapeAllowed("Bearer ", token)).toBe("denied");
    expect(scrapeAllowed(`Basic ${token}`, token)).toBe("denied");
  });
});

describe("renderMetrics", () => {
  it("counts VMs by fleet and state, unhealthy, in use and idle held ones, from Postgres", async () => {
    const a = await makeFleet(t.db, { name: "metrics-a", desiredSize: 5 });
    const b = await makeFleet(t.db, { name: "metrics-b", driver: "terraform", desiredSize: 0 });
    const holder = await makeUser(t.db);
    await makeVms(t.db, a, 3, "ready");
    await makeVms(t.db, a, 1, "ready", { healthy: false, healthReasons: ["GPU missing"] });
    await makeVms(t.db, a, 1, "claimed", {
      holderId: holder.id,
      inUse: true,
      idleSince: new Date(Date.now() - 3_600_000),
    });
    await makeVms(t.db, a, 2, "terminated", { healthy: false });
    await t.db.insert(operations).values({ fleetId: b.id, kind: "fleet.scale", status: "queued" });

    const { contentType, body } = await renderMetrics(t.db);
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(body).toContain("# HELP lablink_vms VMs by fleet and state");
    expect(await value("lablink_vms", { fleet: "metrics-a", state: "ready" })).toBe(4);
    expect(await value("lablink_vms", { fleet: "metrics-a", state: "claimed" })).toBe(1);
    expect(await value("lablink_vms", { fleet: "metrics-a", state: "terminated" })).toBe(2);
    // Terminated VMs are gone, not unhealthy.
    expect(await value("lablink_vms_unhealthy", { fleet: "metrics-a" })).toBe(1);
    expect(await value("lablink_vms_in_use", { fleet: "metrics-a" })).toBe(1);
    expect(await value("lablink_vms_idle_held", { fleet: "metrics-a" })).toBe(1);
    // A fleet without VMs still shows, at 0.
    expect(body).toMatch(/^lablink_vms_unhealthy\{fleet="metrics-b"\} 0$/m);
    expect(
      await value("lablink_fleet_desired_size", {
        fleet: "metrics-a",
        driver: "local",
        status: "active",
      }),
    ).toBe(5);
    expect(
      await value("lablink_operations", { kind: "fleet.scale", status: "queued" }),
    ).toBeGreaterThanOrEqual(1);
    expect(body).toContain("lablink_web_process_resident_memory_bytes");

    // A destroyed fleet disappears at the next scrape instead of staying at its last value.
    await t.db.update(fleets).set({ status: "destroyed" }).where(eq(fleets.id, a.id));
    const after = samples((await renderMetrics(t.db)).body);
    expect(after.some((s) => s.labels.fleet === "metrics-a")).toBe(false);
  });

  it("counts API calls and claims by outcome, as they happen", async () => {
    const fleet = await makeFleet(t.db, { name: "metrics-claims" });
    await makeVms(t.db, fleet, 1, "ready");
    const [first, second] = [await makeUser(t.db), await makeUser(t.db)];
    const before = {
      claimed: await value("lablink_claims_total", { outcome: "claimed" }),
      rejoined: await value("lablink_claims_total", { outcome: "rejoined" }),
      full: await value("lablink_claims_total", { outcome: "no_capacity" }),
      ok: await value("lablink_api_calls_total", { path: "vm.claim", code: "OK" }),
      refused: await value("lablink_api_calls_total", {
        path: "vm.claim",
        code: "PRECONDITION_FAILED",
      }),
      durations: await value("lablink_claim_duration_seconds_count", { outcome: "claimed" }),
    };
    const claim = (userId: string) => api.mutate("vm.claim", { fleetId: fleet.id }, { userId });
    expect((await claim(first.id)).status).toBe(200);
    expect((await claim(first.id)).status).toBe(200); // the same VM again
    expect((await claim(second.id)).status).toBe(412); // nothing left

    expect(await value("lablink_claims_total", { outcome: "claimed" })).toBe(before.claimed + 1);
    expect(await value("lablink_claims_total", { outcome: "rejoined" })).toBe(before.rejoined + 1);
    expect(await value("lablink_claims_total", { outcome: "no_capacity" })).toBe(before.full + 1);
    expect(await value("lablink_api_calls_total", { path: "vm.claim", code: "OK" })).toBe(
      before.ok + 2,
    );
    // The domain error's code, not the INTERNAL_SERVER_ERROR that wrapped it.
    expect(
      await value("lablink_api_calls_total", { path: "vm.claim", code: "PRECONDITION_FAILED" }),
    ).toBe(before.refused + 1);
    expect(await value("lablink_claim_duration_seconds_count", { outcome: "claimed" })).toBe(
      before.durations + 1,
    );
  });

  it("counts agents' heartbeats by result, their latency, and the pool of claimable VMs", async () => {
    const fleet = await makeFleet(t.db, { name: "metrics-pool" });
    const [vm] = await makeVms(t.db, fleet, 2, "ready");
    await makeVms(t.db, fleet, 1, "ready", { healthy: false, healthReasons: ["GPU missing"] });
    if (!vm) throw new Error("fixtures");
    const token = await makeAgent(t.db, vm);
    // Two ready and healthy; the unhealthy one is not claimable.
    expect(await value("lablink_pool_ready", { fleet: "metrics-pool" })).toBe(2);
    const before = {
      ok: await value("lablink_agent_heartbeats_total", { code: "OK" }),
      refused: await value("lablink_agent_heartbeats_total", { code: "UNAUTHORIZED" }),
      timed: await value("lablink_agent_heartbeat_duration_seconds_count"),
    };
    const beat = (authorization: string) =>
      api.mutate("agent.heartbeat", heartbeatInput(vm.id), { authorization });
    expect((await beat(`Bearer ${token}`)).status).toBe(200);
    expect((await beat("Bearer not-a-token")).status).toBe(401);
    expect(await value("lablink_agent_heartbeats_total", { code: "OK" })).toBe(before.ok + 1);
    expect(await value("lablink_agent_heartbeats_total", { code: "UNAUTHORIZED" })).toBe(
      before.refused + 1,
    );
    expect(await value("lablink_agent_heartbeat_duration_seconds_count")).toBe(before.timed + 2);
    expect(await value("lablink_agent_long_polls_open")).toBe(0);
  });

  it("still answers when Postgres cannot be read, with lablink_database_up 0 and the error counted", async () => {
    expect(await value("lablink_database_up")).toBe(1);
    // A port nothing listens on: the connection is refused.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const down = createDatabase(`postgres://nobody@127.0.0.1:${port}/none`, { max: 1 });
    const before = await value("lablink_db_errors_total");
    try {
      const { body } = await renderMetrics(down.db);
      expect(body).toMatch(/^lablink_database_up 0$/m);
      expect(body).toMatch(new RegExp(`^lablink_db_errors_total ${before + 1}$`, "m"));
    } finally {
      await down.sql.end({ timeout: 1 });
    }
    expect(await value("lablink_database_up")).toBe(1);
  });
});

describe("isDatabaseError", () => {
  it("recognises Postgres and connection errors, also wrapped, and nothing else", () => {
    const pg = Object.assign(new Error("relation missing"), { name: "PostgresError" });
    const refused = Object.assign(new Error("connect"), { code: "ECONNREFUSED" });
    expect(isDatabaseError(pg)).toBe(true);
    expect(isDatabaseError(refused)).toBe(true);
    expect(isDatabaseError(new Error("query failed", { cause: pg }))).toBe(true);
    expect(isDatabaseError(new Error("a bug"))).toBe(false);
    expect(isDatabaseError("text")).toBe(false);
  });
});
