import postgres from "postgres";
import { afterEach, describe, expect, it } from "vitest";
import { dbNow, installVirtualClock, setClock } from "../../bench/sim/clock";
import { type Policy, simulate } from "../../bench/sim/engine";
import {
  idleSavedPct,
  lablinkPolicy,
  staticPolicy,
  waitPercentile,
} from "../../bench/sim/policies";
import { generateWorkshop, type Trace, traceSchema } from "../../bench/sim/trace";
import { createTestDatabase, type TestDatabase } from "../db";

let database: TestDatabase | undefined;
afterEach(async () => {
  await database?.drop();
  database = undefined;
});

const noLimits: Omit<Policy, "name" | "initialSize"> = {
  schedule: [],
  maxHoldMinutes: null,
  idleReleaseMinutes: null,
  reminderLeadMinutes: 0,
  agentIdleAfterMinutes: 30,
};

describe("the virtual clock", () => {
  it("makes now() and column defaults in the sim database read the virtual time", async () => {
    database = await createTestDatabase({ max: 1 });
    const start = new Date("2027-03-01T00:00:00Z");
    await installVirtualClock(database.url, start);
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      expect((await dbNow(sql)).toISOString()).toBe(start.toISOString());
      const later = new Date("2027-03-02T09:30:00Z");
      await setClock(sql, later);
      expect((await dbNow(sql)).toISOString()).toBe(later.toISOString());
      const [row] =
        await sql`INSERT INTO users (name, email) VALUES ('a', 'a@x.edu') RETURNING created_at`;
      expect((row as { created_at: Date }).created_at.toISOString()).toBe(later.toISOString());
    } finally {
      await sql.end();
    }
  });
});

describe("sim:workshop", () => {
  it("charges a static pool what a hand calculation of a tiny trace gives", {
    timeout: 180_000,
  }, async () => {
    database = await createTestDatabase({ max: 2 });
    // One person, 09:00-10:00 (minute 60-120 of an 8-hour window), idle 09:20-09:30, then releases.
    const trace: Trace = traceSchema.parse({
      name: "tiny",
      description: ["hand-checked"],
      seed: 1,
      startsAt: "2027-03-01T08:00:00.000Z",
      horizonMinutes: 480,
      slots: [{ label: "one", start: 60, end: 120 }],
      participants: [
        {
          id: "a",
          noShow: false,
          visits: [{ arrive: 60, leave: 120, release: true, idle: [[80, 90]] }],
        },
        { id: "b", noShow: true, visits: [] },
      ],
    });
    const r = await simulate(
      trace,
      { ...noLimits, name: "static", initialSize: 2 },
      { url: database.url, seed: 1, bootMinutes: [4, 8] },
    );
    // Two VMs for 8 hours, booting included; used 60 min less the 10 idle ones.
    expect(r.paidGpuHours).toBeCloseTo(16, 6);
    expect(r.inUseGpuHours).toBeCloseTo(50 / 60, 6);
    expect(r.idleGpuHours).toBeCloseTo(16 - 50 / 60, 6);
    expect(r.waits).toEqual([0]);
    expect(r.arrivals).toBe(1);
    expect(r.unserved).toBe(0);
    expect(r.peakVms).toBe(2);
    expect(r.releasesWithoutWarning).toBe(0);
  });

  it("keeps its invariants replaying a generated workshop under LabLink's policies", {
    timeout: 300_000,
  }, async () => {
    database = await createTestDatabase({ max: 2 });
    const trace = generateWorkshop(7, {
      participants: 8,
      days: 1,
      noShowRate: 0.15,
      sessions: [{ label: "morning", start: 9 * 60, end: 12 * 60 }],
      attendRate: 1,
      lateRate: 0.3,
      earlyLeaveRate: 0.2,
      releaseRate: 0.3,
      extraIdleRate: 0.5,
    });
    const minutes = 15 * 60;
    const r = await simulate(trace, lablinkPolicy(trace), {
      url: database.url,
      seed: 7,
      bootMinutes: [4, 8],
      minutes,
    });
    const expectedArrivals = trace.participants.flatMap((p) =>
      p.visits.filter((v) => v.arrive < minutes),
    ).length;
    expect(expectedArrivals).toBeGreaterThan(0);
    expect(r.arrivals).toBe(expectedArrivals);
    // Every need for a VM was met or counted as unserved; nobody ever shared a VM.
    expect(r.waits.length + r.unserved).toBeGreaterThanOrEqual(r.arrivals);
    expect(r.doubleHolds).toBe(0);
    expect(r.paidGpuHours).toBeGreaterThanOrEqual(r.idleGpuHours);
    expect(r.paidGpuHours).toBeCloseTo(r.idleGpuHours + r.inUseGpuHours, 6);
    expect(r.inUseGpuHours).toBeGreaterThan(0);
    // Walk-aways are released by the idle limit, each after its reminder.
    expect(r.policyReleases.idle).toBeGreaterThan(0);
    expect(r.releasesWithoutWarning).toBe(0);
    // The schedule scaled the fleet to 0 after the session: nothing is paid for at the end.
    const [left] =
      await database.sql`SELECT count(*)::int AS n FROM vms WHERE state <> 'terminated'`;
    expect(left?.n).toBe(0);
    const [twice] = await database.sql`
      SELECT count(*)::int AS n FROM (
        SELECT holder_id FROM vms WHERE holder_id IS NOT NULL GROUP BY holder_id HAVING count(*) > 1
      ) x`;
    expect(twice?.n).toBe(0);
    expect(waitPercentile(r, 95)).toBeGreaterThanOrEqual(0);
  });

  it("puts every person who comes into the static pool's size", () => {
    const trace = generateWorkshop(11);
    const comers = trace.participants.filter((p) => !p.noShow && p.visits.length > 0).length;
    expect(staticPolicy(trace).initialSize).toBe(comers);
    expect(
      idleSavedPct(
        { idleGpuHours: 100 } as Parameters<typeof idleSavedPct>[0],
        { idleGpuHours: 35 } as Parameters<typeof idleSavedPct>[1],
      ),
    ).toBe(65);
  });
});
