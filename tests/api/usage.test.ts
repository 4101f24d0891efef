import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents } from "../../server/db/schema";
import { usageReport } from "../../server/domain/usage";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { apiClient } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
});
afterAll(() => t?.drop());

const now = Date.now();
const hoursAgo = (h: number) => new Date(now - h * 3_600_000);

/** One audit row for a VM: a claim by `userId`, or a transition to `toState`. */
function event(vmId: string, at: Date, e: { claimBy?: string; toState?: string; action?: string }) {
  return {
    at,
    actorKind: e.claimBy ? ("user" as const) : ("system" as const),
    actorId: e.claimBy ?? null,
    action: e.claimBy ? "vm.claim" : (e.action ?? "vm.release"),
    targetKind: "vm",
    targetId: vmId,
    fromState: e.claimBy ? "ready" : "claimed",
    toState: e.claimBy ? "claimed" : (e.toState ?? "releasing"),
  };
}

describe("usageReport", () => {
  it("adds up each researcher's holds inside the period, weighted by GPUs, and per fleet", async () => {
    const quad = await makeFleet(t.db, { name: "usage-quad", gpuCount: 4 });
    const single = await makeFleet(t.db, { name: "usage-single", gpuCount: 1 });
    const [q1, q2] = await makeVms(t.db, quad, 2, "ready");
    const [s1] = await makeVms(t.db, single, 1, "ready");
    const ada = await makeUser(t.db, "researcher", "usage-ada");
    const bob = await makeUser(t.db, "researcher", "usage-bob");
    if (!q1 || !q2 || !s1) throw new Error("fixtures");
    await t.db.insert(auditEvents).values([
      // Ada: 3 h on a 4-GPU VM, with a reboot in the middle that does not end the hold.
      event(q1.id, hoursAgo(10), { claimBy: ada.id }),
      event(q1.id, hoursAgo(9), { action: "vm.reboot", toState: "rebooting" }),
      event(q1.id, hoursAgo(8.5), { action: "vm.rebooted", toState: "claimed" }),
      event(q1.id, hoursAgo(7), { action: "vm.hold_expired", toState: "releasing" }),
      // Ada again: holding a 1-GPU VM for the last 2 hours.
      event(s1.id, hoursAgo(2), { claimBy: ada.id }),
      // Bob: claimed 30 h ago, released 20 h ago; the period (last 24 h) holds 4 h of it.
      event(q2.id, hoursAgo(30), { claimBy: bob.id }),
      event(q2.id, hoursAgo(20), { toState: "releasing" }),
      // Bob again: a hold entirely before the period.
      event(q2.id, hoursAgo(50), { claimBy: bob.id }),
      event(q2.id, hoursAgo(49), { toState: "releasing" }),
    ]);

    const report = await usageReport(t.db, hoursAgo(24), new Date(now));
    const user = (id: string) => report.users.find((u) => u.userId === id);
    expect(user(ada.id)).toMatchObject({
      name: "usage-ada",
      holds: 2,
      holdingNow: true,
    });
    expect(user(ada.id)?.hours).toBeCloseTo(5, 1);
    expect(user(ada.id)?.gpuHours).toBeCloseTo(3 * 4 + 2 * 1, 1);
    expect(user(bob.id)).toMatchObject({ holds: 1, holdingNow: false, hours: 4, gpuHours: 16 });
    // Most GPU-hours first.
    expect(report.users.map((u) => u.userId)).toEqual([bob.id, ada.id]);
    const fleet = (name: string) => report.fleets.find((f) => f.fleet === name);
    expect(fleet("usage-quad")).toMatchObject({ holds: 2, hours: 7, gpuHours: 28 });
    expect(fleet("usage-single")?.gpuHours).toBeCloseTo(2, 1);
    expect(report.total.holds).toBe(3);
    expect(report.total.gpuHours).toBeCloseTo(30, 1);

    // A period before all of it: nothing.
    const empty = await usageReport(t.db, hoursAgo(200), hoursAgo(100));
    expect(empty.users).toEqual([]);
    expect(empty.total).toEqual({ holds: 0, hours: 0, gpuHours: 0 });
  });

  it("usage.report: admins only, the last N days, with a real claim and release counted", async () => {
    const admin = await makeUser(t.db, "admin");
    const researcher = await makeUser(t.db);
    const fleet = await makeFleet(t.db, { name: "usage-api" });
    await makeVms(t.db, fleet, 1, "ready");
    expect(
      (await api.mutate("vm.claim", { fleetId: fleet.id }, { userId: researcher.id })).status,
    ).toBe(200);
    expect((await api.mutate("vm.release", undefined, { userId: researcher.id })).status).toBe(200);

    const res = await api.query("usage.report", { days: 7 }, { userId: admin.id });
    expect(res.status).toBe(200);
    const report = res.data as Awaited<ReturnType<typeof usageReport>>;
    expect(report.from).toBeInstanceOf(Date);
    expect(report.to.getTime() - report.from.getTime()).toBe(7 * 86_400_000);
    expect(report.users.find((u) => u.userId === researcher.id)).toMatchObject({
      holds: 1,
      holdingNow: false,
    });
    expect((await api.query("usage.report", { days: 7 }, { userId: researcher.id })).status).toBe(
      403,
    );
    expect((await api.query("usage.report", { days: 0 }, { userId: admin.id })).status).toBe(400);
    expect((await api.query("usage.report", { days: 400 }, { userId: admin.id })).status).toBe(400);
  });
});
