import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, fleets, type users } from "../../server/db/schema";
import { warmPoolPolicyOf } from "../../server/domain/warm-pool";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser } from "../fixtures";
import { apiClient, tableCounts } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let admin: typeof users.$inferSelect;
let researcher: typeof users.$inferSelect;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  admin = await makeUser(t.db, "admin");
  researcher = await makeUser(t.db);
});
afterAll(() => t?.drop());

const policyOf = async (id: string) =>
  warmPoolPolicyOf((await t.db.select().from(fleets).where(eq(fleets.id, id)))[0]?.warmPool);
const actions = async (fleetId: string) =>
  (await t.db.select().from(auditEvents).where(eq(auditEvents.targetId, fleetId))).map((a) => [
    a.action,
    a.actorId,
  ]);

describe("fleet.setWarmPool, fleet.pauseWarmPool, fleet.resumeWarmPool", () => {
  it("an admin sets, pauses and resumes a warm pool; each step is audited", async () => {
    const fleet = await makeFleet(t.db);
    const as = { userId: admin.id };
    const set = await api.mutate(
      "fleet.setWarmPool",
      { fleetId: fleet.id, policy: { desiredReady: 2, maxSize: 5 } },
      as,
    );
    expect(set.status).toBe(200);
    expect(await policyOf(fleet.id)).toMatchObject({ desiredReady: 2, maxSize: 5, paused: false });

    const paused = await api.mutate(
      "fleet.pauseWarmPool",
      { fleetId: fleet.id, reason: "new AMI being tested" },
      as,
    );
    expect(paused.status).toBe(200);
    expect(await policyOf(fleet.id)).toMatchObject({
      paused: true,
      pausedReason: "new AMI being tested",
    });
    expect((await api.mutate("fleet.resumeWarmPool", { fleetId: fleet.id }, as)).status).toBe(200);
    expect(await policyOf(fleet.id)).toMatchObject({ paused: false, pausedReason: null });
    expect(await actions(fleet.id)).toEqual([
      ["fleet.warm_pool_set", admin.id],
      ["fleet.warm_pool_pause", admin.id],
      ["fleet.warm_pool_resume", admin.id],
    ]);
  });

  it("researchers may not; bad policies and fleets without a pool are refused", async () => {
    const fleet = await makeFleet(t.db);
    const byo = await makeFleet(t.db, { driver: "byo" });
    const before = await tableCounts(t.db);
    expect(
      (await api.mutate("fleet.pauseWarmPool", { fleetId: fleet.id }, { userId: researcher.id }))
        .status,
    ).toBe(403);
    const cases: [string, unknown, number, RegExp?][] = [
      ["fleet.pauseWarmPool", { fleetId: fleet.id }, 409, /has no warm pool/],
      ["fleet.resumeWarmPool", { fleetId: crypto.randomUUID() }, 404],
      [
        "fleet.setWarmPool",
        { fleetId: fleet.id, policy: { desiredReady: -1, maxSize: 2 } },
        400,
        /desiredReady/,
      ],
      [
        "fleet.setWarmPool",
        { fleetId: fleet.id, policy: { desiredReady: 3, maxSize: 2 } },
        400,
        /cannot exceed the maximum/,
      ],
      [
        "fleet.setWarmPool",
        { fleetId: byo.id, policy: { desiredReady: 1, maxSize: 2 } },
        400,
        /bring-your-own/,
      ],
    ];
    for (const [proc, input, status, message] of cases) {
      const res = await api.mutate(proc, input, { userId: admin.id });
      expect(res.status, `${proc} ${JSON.stringify(input)}`).toBe(status);
      if (message) expect(JSON.stringify(res.error)).toMatch(message);
    }
    expect(await tableCounts(t.db)).toEqual(before);
  });
});

describe("fleet.addRecurringSchedule, fleet.scheduleDestroy", () => {
  const slot = {
    rrule: "FREQ=WEEKLY;BYDAY=TU,TH",
    timezone: "Europe/London",
    startTime: "09:00",
    endTime: "17:00",
    size: 8,
  };

  it("adds a weekly slot and lists it with its next change", async () => {
    const fleet = await makeFleet(t.db);
    const res = await api.mutate(
      "fleet.addRecurringSchedule",
      { fleetId: fleet.id, ...slot },
      { userId: admin.id },
    );
    expect(res.status).toBe(200);
    const list = await api.query(
      "fleet.recurringSchedules",
      { fleetId: fleet.id },
      { userId: admin.id },
    );
    const [row] = list.data as { next: { at: Date; size: number } | null }[];
    expect(row?.next?.size).toBe(8);
    expect(row?.next?.at).toBeInstanceOf(Date);
  });

  it("a bad RRULE is BAD_REQUEST naming the field", async () => {
    const fleet = await makeFleet(t.db);
    const before = await tableCounts(t.db);
    for (const [rrule, message] of [
      ["FREQ=MINUTELY", /too often/],
      ["FREQ=SECONDLY;COUNT=3", /too often/],
      ["FREQ=WEEKLY;BYDAY=XX", /unknown day/],
      ["not a rule", /RRULE/],
    ] as const) {
      const res = await api.mutate(
        "fleet.addRecurringSchedule",
        { fleetId: fleet.id, ...slot, rrule },
        { userId: admin.id },
      );
      expect(res.status, rrule).toBe(400);
      const error = res.error as unknown as {
        data: { code: string; fieldErrors: { path: string; message: string }[] };
      };
      expect(error.data.code).toBe("BAD_REQUEST");
      expect(error.data.fieldErrors).toEqual([
        { path: "rrule", message: expect.stringMatching(message) },
      ]);
    }
    const tz = await api.mutate(
      "fleet.addRecurringSchedule",
      { fleetId: fleet.id, ...slot, timezone: "Nowhere/Land" },
      { userId: admin.id },
    );
    expect(JSON.stringify(tz.error)).toMatch(/"path":"timezone"/);
    expect(await tableCounts(t.db)).toEqual(before);
  });

  it("schedules a destruction", async () => {
    const fleet = await makeFleet(t.db);
    const res = await api.mutate(
      "fleet.scheduleDestroy",
      { fleetId: fleet.id, at: new Date(Date.now() + 3_600_000) },
      { userId: admin.id },
    );
    expect(res.status).toBe(200);
    expect(res.data).toMatchObject({ kind: "destroy", status: "pending" });
  });
});

describe("fleet.list: warm pool status and next change", () => {
  it("shows why a warm-pool fleet is not at its size and its next scheduled change", async () => {
    const fleet = await makeFleet(t.db, { desiredSize: 0 });
    const other = await makeFleet(t.db);
    const as = { userId: admin.id };
    await api.mutate(
      "fleet.setWarmPool",
      { fleetId: fleet.id, policy: { desiredReady: 2, maxSize: 4 } },
      as,
    );
    await api.mutate("fleet.pauseWarmPool", { fleetId: fleet.id, reason: "budget review" }, as);
    const inTwoHours = new Date(Date.now() + 2 * 3_600_000);
    await api.mutate("fleet.scheduleScale", { fleetId: fleet.id, at: inTwoHours, size: 6 }, as);
    await api.mutate(
      "fleet.scheduleDestroy",
      { fleetId: fleet.id, at: new Date(Date.now() + 5 * 3_600_000) },
      as,
    );
    const list = await api.query("fleet.list", undefined, as);
    const row = (list.data as { id: string }[]).find((f) => f.id === fleet.id);
    expect(row).toMatchObject({
      warmPool: { desiredReady: 2, maxSize: 4, paused: true },
      warmPoolStatus: { status: "paused", reason: "Paused: budget review" },
      nextChange: { at: inTwoHours, kind: "ready", size: 6, source: "once" },
    });
    // A fleet without a warm pool (not whichever other fleet the list shows first: earlier tests
    // give some of theirs one).
    const plain = (list.data as { id: string; warmPool: unknown; nextChange: unknown }[]).find(
      (f) => f.id === other.id,
    );
    expect(plain).toMatchObject({ warmPool: null, warmPoolStatus: null, nextChange: null });
  });
});
