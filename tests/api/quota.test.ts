import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, fleets, type users } from "../../server/db/schema";
import type { PoolSummary } from "../../server/domain/pool";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { apiClient, tableCounts } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let admin: typeof users.$inferSelect;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  admin = await makeUser(t.db, "admin");
});
afterAll(() => t?.drop());

const hoursAgo = (h: number) => new Date(Date.now() - h * 3_600_000);

/** A finished hold in the audit log: claimed `from` hours ago, released `to` hours ago. */
async function pastHold(userId: string, vmId: string, from: number, to: number) {
  await t.db.insert(auditEvents).values([
    {
      at: hoursAgo(from),
      actorKind: "user",
      actorId: userId,
      action: "vm.claim",
      targetKind: "vm",
      targetId: vmId,
      fromState: "ready",
      toState: "claimed",
    },
    {
      at: hoursAgo(to),
      actorKind: "user",
      actorId: userId,
      action: "vm.release",
      targetKind: "vm",
      targetId: vmId,
      fromState: "claimed",
      toState: "releasing",
    },
  ]);
}

const quotaOf = async (userId: string, fleetId: string) => {
  const res = await api.query("pool.summary", undefined, { userId });
  return (res.data as PoolSummary).fleets.find((f) => f.fleetId === fleetId)?.quota;
};

describe("weekly GPU-hour quotas", () => {
  it("refuses a claim on a fleet whose quota the researcher used up, says why, and lets others claim", async () => {
    const fleet = await makeFleet(t.db, { name: "quota-a", gpuCount: 2, gpuHoursPerWeek: 10 });
    const [vm] = await makeVms(t.db, fleet, 2, "ready");
    if (!vm) throw new Error("fixtures");
    const heavy = await makeUser(t.db);
    const light = await makeUser(t.db);
    // 5 hours on a 2-GPU VM: 10 GPU-hours. An older hold, 8 days ago, no longer counts.
    await pastHold(heavy.id, vm.id, 6, 1);
    await pastHold(heavy.id, vm.id, 8 * 24, 8 * 24 - 3);

    expect(await quotaOf(heavy.id, fleet.id)).toEqual({ gpuHoursPerWeek: 10, usedGpuHours: 10 });
    expect(await quotaOf(light.id, fleet.id)).toEqual({ gpuHoursPerWeek: 10, usedGpuHours: 0 });

    const refused = await api.mutate("vm.claim", { fleetId: fleet.id }, { userId: heavy.id });
    expect(refused.status).toBe(403);
    expect(refused.error?.message).toBe(
      "You have used 10 of your 10 GPU-hours for the last 7 days on quota-a. They come back as your earlier holds pass out of that window; ask your admin if you need more.",
    );
    expect((refused.error?.data as { domainCode?: string } | undefined)?.domainCode).toBe(
      "QUOTA_EXCEEDED",
    );

    const ok = await api.mutate("vm.claim", { fleetId: fleet.id }, { userId: light.id });
    expect(ok.status).toBe(200);
  });

  it("a claim without a fleet skips the fleets over quota and takes a VM elsewhere", async () => {
    const capped = await makeFleet(t.db, { name: "quota-b", gpuCount: 1, gpuHoursPerWeek: 2 });
    const open = await makeFleet(t.db, { name: "quota-b-open" });
    const [cappedVm] = await makeVms(t.db, capped, 1, "ready", {
      stateChangedAt: hoursAgo(48),
    });
    const [openVm] = await makeVms(t.db, open, 1, "ready", { stateChangedAt: new Date() });
    const user = await makeUser(t.db);
    if (!cappedVm || !openVm) throw new Error("fixtures");
    await pastHold(user.id, cappedVm.id, 5, 2);
    // The capped fleet's VM has waited longest and would be picked first, but not for this user.
    const res = await api.mutate("vm.claim", {}, { userId: user.id });
    expect(res.status).toBe(200);
    expect((res.data as { vmId: string }).vmId).not.toBe(cappedVm.id);
  });

  it("fleet.setQuota raises, lowers and removes a quota, audited; bad values change nothing", async () => {
    const fleet = await makeFleet(t.db, { name: "quota-c", gpuCount: 1, gpuHoursPerWeek: 1 });
    const [vm] = await makeVms(t.db, fleet, 1, "ready");
    const user = await makeUser(t.db);
    if (!vm) throw new Error("fixtures");
    await pastHold(user.id, vm.id, 3, 1);
    expect((await api.mutate("vm.claim", { fleetId: fleet.id }, { userId: user.id })).status).toBe(
      403,
    );

    const raised = await api.mutate(
      "fleet.setQuota",
      { fleetId: fleet.id, gpuHoursPerWeek: 20 },
      { userId: admin.id },
    );
    expect(raised.data).toEqual({ fleetId: fleet.id, gpuHoursPerWeek: 20 });
    const [entry] = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.action, "fleet.quota"), eq(auditEvents.targetId, fleet.id)));
    expect(entry).toMatchObject({ actorId: admin.id, details: { from: 1, to: 20 } });
    expect((await api.mutate("vm.claim", { fleetId: fleet.id }, { userId: user.id })).status).toBe(
      200,
    );

    const researcher = await makeUser(t.db);
    const before = await tableCounts(t.db);
    const cases: [unknown, string, number][] = [
      [{ fleetId: fleet.id, gpuHoursPerWeek: 0 }, admin.id, 400],
      [{ fleetId: fleet.id, gpuHoursPerWeek: 1.5 }, admin.id, 400],
      [{ fleetId: fleet.id, gpuHoursPerWeek: 10_001 }, admin.id, 400],
      [{ fleetId: fleet.id, gpuHoursPerWeek: "20" }, admin.id, 400],
      [{ fleetId: crypto.randomUUID(), gpuHoursPerWeek: 5 }, admin.id, 404],
      [{ fleetId: fleet.id, gpuHoursPerWeek: 5 }, researcher.id, 403],
    ];
    for (const [input, userId, status] of cases) {
      const res = await api.mutate("fleet.setQuota", input, { userId });
      expect(res.status, JSON.stringify(input)).toBe(status);
    }
    expect(await tableCounts(t.db)).toEqual(before);

    const removed = await api.mutate(
      "fleet.setQuota",
      { fleetId: fleet.id, gpuHoursPerWeek: null },
      { userId: admin.id },
    );
    expect(removed.data).toEqual({ fleetId: fleet.id, gpuHoursPerWeek: null });
    const [row] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(row?.gpuHoursPerWeek).toBeNull();
    expect(await quotaOf(user.id, fleet.id)).toBeNull();
  });
});
