import { and, eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, crdHandoffs, vms } from "../../server/db/schema";
import { myVm } from "../../server/domain/allocation";
import { keepIdleVm, lastEndedHold, releaseExpiredHolds } from "../../server/domain/hold-limits";
import { forceReleaseVm } from "../../server/domain/vm-admin";
import { allJobs } from "../../server/jobs/definitions";
import { JobRunner } from "../../server/jobs/runner";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { runJob } from "../jobs";

let t: TestDatabase;
let runner: JobRunner;

beforeAll(async () => {
  t = await createTestDatabase();
  runner = new JobRunner(t.url, t.db, logger);
  await runner.start(allJobs({ staleSeconds: 60, drivers: {} }));
});
afterAll(async () => {
  await runner?.stop();
  await t?.drop();
});

const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000);

async function heldVm(fleetLimit: number | null, claimedMinutesAgo: number, state = "claimed") {
  const fleet = await makeFleet(t.db, { maxHoldMinutes: fleetLimit });
  const holder = await makeUser(t.db);
  const [vm] = await makeVms(t.db, fleet, 1, state as "claimed", {
    holderId: holder.id,
    claimedAt: minutesAgo(claimedMinutesAgo),
    assignmentId: crypto.randomUUID(),
  });
  if (!vm) throw new Error("fixtures");
  return { vm, holder, fleet };
}

async function vmRow(id: string) {
  const [row] = await t.db.select().from(vms).where(eq(vms.id, id));
  return row;
}

describe("hold limits", () => {
  it("releases a VM held past its fleet's limit through the release transition, with an audit row", async () => {
    const { vm, holder } = await heldVm(60, 61);
    await t.db.insert(crdHandoffs).values({
      vmId: vm.id,
      requestId: crypto.randomUUID(),
      assignmentId: vm.assignmentId ?? crypto.randomUUID(),
      userId: holder.id,
      sealed: "sealed-code",
    });
    const within = await heldVm(60, 59);
    const unlimited = await heldVm(null, 60 * 24 * 30);

    const released = await releaseExpiredHolds(t.db);
    expect(released).toContainEqual({
      reason: "hold_expired",
      vmId: vm.id,
      holderId: holder.id,
      maxHoldMinutes: 60,
    });
    expect(released.map((r) => r.vmId)).not.toContain(within.vm.id);
    expect(released.map((r) => r.vmId)).not.toContain(unlimited.vm.id);

    const after = await vmRow(vm.id);
    expect(after).toMatchObject({ state: "releasing", holderId: null });
    expect(after?.releasedAt).toBeInstanceOf(Date);
    const [audit] = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.targetId, vm.id), eq(auditEvents.action, "vm.hold_expired")));
    expect(audit).toMatchObject({
      actorKind: "system",
      fromState: "claimed",
      toState: "releasing",
      details: { holderId: holder.id, maxHoldMinutes: 60 },
    });
    expect(await t.db.select().from(crdHandoffs).where(eq(crdHandoffs.vmId, vm.id))).toHaveLength(
      0,
    );
    expect((await vmRow(within.vm.id))?.state).toBe("claimed");
    expect((await vmRow(unlimited.vm.id))?.state).toBe("claimed");

    // Idempotent: nothing more to release, no second audit row.
    expect((await releaseExpiredHolds(t.db)).map((r) => r.vmId)).not.toContain(vm.id);
    const rows = await t.db
      .select({ n: sql<number>`count(*)::int` })
      .from(auditEvents)
      .where(and(eq(auditEvents.targetId, vm.id), eq(auditEvents.action, "vm.hold_expired")));
    expect(rows[0]?.n).toBe(1);
  });

  it("tells the researcher why their VM went (limit or admin) until they claim again", async () => {
    const { vm, holder } = await heldVm(60, 61);
    const bystander = await makeUser(t.db);
    expect(await lastEndedHold(t.db, holder.id)).toBeNull();
    await releaseExpiredHolds(t.db);
    expect(await lastEndedHold(t.db, holder.id)).toMatchObject({
      reason: "hold_expired",
      vmName: vm.name,
      limitMinutes: 60,
    });
    expect(await lastEndedHold(t.db, bystander.id)).toBeNull();
    // A claim of theirs afterwards: the notice is old news.
    await t.db.insert(auditEvents).values({
      actorKind: "user",
      actorId: holder.id,
      action: "vm.claim",
      targetKind: "vm",
      targetId: vm.id,
    });
    expect(await lastEndedHold(t.db, holder.id)).toBeNull();

    // An admin's force release says so.
    const other = await heldVm(null, 5);
    const admin = await makeUser(t.db, "admin");
    await forceReleaseVm(t.db, other.vm.id, { kind: "user", id: admin.id });
    expect(await lastEndedHold(t.db, other.holder.id)).toMatchObject({
      reason: "force_release",
      vmName: other.vm.name,
      limitMinutes: null,
    });
  });

  it("also ends a drained VM's hold, but waits for a rebooting one to come back", async () => {
    const drained = await heldVm(30, 45, "draining");
    const rebooting = await heldVm(30, 45, "rebooting");
    const ids = (await releaseExpiredHolds(t.db)).map((r) => r.vmId);
    expect(ids).toContain(drained.vm.id);
    expect(ids).not.toContain(rebooting.vm.id);
    expect((await vmRow(drained.vm.id))?.state).toBe("releasing");
    expect(await vmRow(rebooting.vm.id)).toMatchObject({
      state: "rebooting",
      holderId: rebooting.holder.id,
    });
  });

  it("runs as the vm.expire-holds pg-boss job", async () => {
    const { vm } = await heldVm(15, 20);
    const job = await runJob(runner, "vm.expire-holds");
    expect(job.state).toBe("completed");
    expect((await vmRow(vm.id))?.state).toBe("releasing");
  });
});

describe("idle limits", () => {
  /** A VM held since `claimedMinutesAgo` whose agent reports it idle since `idleMinutesAgo`. */
  async function idleVm(
    idleLimit: number | null,
    claimedMinutesAgo: number,
    idleMinutesAgo: number | null,
    vm: { inUse?: boolean; lastHeartbeatAt?: Date } = {},
  ) {
    const fleet = await makeFleet(t.db, { idleReleaseMinutes: idleLimit });
    const holder = await makeUser(t.db);
    const [row] = await makeVms(t.db, fleet, 1, "claimed", {
      holderId: holder.id,
      claimedAt: minutesAgo(claimedMinutesAgo),
      assignmentId: crypto.randomUUID(),
      idleSince: idleMinutesAgo === null ? null : minutesAgo(idleMinutesAgo),
      inUse: vm.inUse ?? false,
      lastHeartbeatAt: vm.lastHeartbeatAt ?? new Date(),
    });
    if (!row) throw new Error("fixtures");
    return { vm: row, holder, fleet };
  }

  it("releases a held VM idle past its fleet's idle limit, with an audit row and a notice", async () => {
    const idle = await idleVm(30, 120, 31);
    const released = await releaseExpiredHolds(t.db);
    expect(released).toContainEqual({
      reason: "idle",
      vmId: idle.vm.id,
      holderId: idle.holder.id,
      idleReleaseMinutes: 30,
    });
    expect(await vmRow(idle.vm.id)).toMatchObject({ state: "releasing", holderId: null });
    const [entry] = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.targetId, idle.vm.id), eq(auditEvents.action, "vm.idle_released")));
    expect(entry).toMatchObject({
      actorKind: "system",
      fromState: "claimed",
      toState: "releasing",
      details: { holderId: idle.holder.id, idleReleaseMinutes: 30 },
    });
    expect(await lastEndedHold(t.db, idle.holder.id)).toMatchObject({
      reason: "idle",
      vmName: idle.vm.name,
      limitMinutes: 30,
    });
    // Idempotent.
    expect((await releaseExpiredHolds(t.db)).map((r) => r.vmId)).not.toContain(idle.vm.id);
  });

  it("leaves alone busy VMs, quiet agents, fresh claims and fleets without a limit", async () => {
    const cases = {
      // Idle for 29 of 30 minutes.
      notYet: await idleVm(30, 120, 29),
      // Not idle: a session, research-process or GPU activity, or input.
      active: await idleVm(30, 120, null),
      // Idle in the pool for hours before this claim 10 minutes ago: the count starts at the claim.
      freshClaim: await idleVm(30, 10, 300),
      // Its agent has not reported for 5 minutes: a stale idle report releases nothing.
      quiet: await idleVm(30, 120, 60, { lastHeartbeatAt: minutesAgo(5) }),
      // The fleet has no idle limit.
      unlimited: await idleVm(null, 600, 500),
    };
    const released = (await releaseExpiredHolds(t.db)).map((r) => r.vmId);
    for (const [name, c] of Object.entries(cases)) {
      expect(released, name).not.toContain(c.vm.id);
      expect((await vmRow(c.vm.id))?.state, name).toBe("claimed");
    }
  });

  it("releases research software left open but untouched: in use and idle", async () => {
    const openOvernight = await idleVm(30, 600, 480, { inUse: true });
    const released = await releaseExpiredHolds(t.db);
    expect(released.map((r) => r.vmId)).toContain(openOvernight.vm.id);
  });

  it("counts again from the holder's \"I'm still using it\", audited; a researcher without a VM gets NOT_FOUND", async () => {
    const kept = await idleVm(30, 120, 45);
    const result = await keepIdleVm(t.db, {
      userId: kept.holder.id,
      actor: { kind: "user", id: kept.holder.id, ip: null },
    });
    expect(result.vmId).toBe(kept.vm.id);
    const left = (result.idleReleaseAt?.getTime() ?? 0) - Date.now();
    expect(left).toBeGreaterThan(29 * 60_000);
    expect(left).toBeLessThanOrEqual(30 * 60_000);
    expect((await releaseExpiredHolds(t.db)).map((r) => r.vmId)).not.toContain(kept.vm.id);
    expect((await vmRow(kept.vm.id))?.state).toBe("claimed");
    const [entry] = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.targetId, kept.vm.id), eq(auditEvents.action, "vm.idle_kept")));
    expect(entry).toMatchObject({ actorKind: "user", actorId: kept.holder.id });

    // Still idle 31 minutes after that: released.
    await t.db
      .update(vms)
      .set({ idleKeptAt: minutesAgo(31) })
      .where(eq(vms.id, kept.vm.id));
    expect((await releaseExpiredHolds(t.db)).map((r) => r.vmId)).toContain(kept.vm.id);

    const nobody = await makeUser(t.db);
    await expect(
      keepIdleVm(t.db, { userId: nobody.id, actor: { kind: "user", id: nobody.id, ip: null } }),
    ).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("My VM shows when the sweep will act: from the latest of claim, idleness and keep; never for quiet or busy agents", async () => {
    const releaseAt = async (vm: Awaited<ReturnType<typeof idleVm>>) =>
      (await myVm(t.db, vm.holder.id))?.idleReleaseAt?.getTime() ?? null;
    const minutesFromNow = (m: number) => Date.now() + m * 60_000;
    const near = (at: number | null, expected: number) =>
      expect(Math.abs((at ?? 0) - expected)).toBeLessThan(5_000);

    near(await releaseAt(await idleVm(30, 120, 20)), minutesFromNow(10));
    // Idle in the pool long before a claim 5 minutes ago: counted from the claim.
    near(await releaseAt(await idleVm(30, 5, 300)), minutesFromNow(25));
    // "I'm still using it" two minutes ago.
    const kept = await idleVm(30, 120, 20);
    await t.db
      .update(vms)
      .set({ idleKeptAt: minutesAgo(2) })
      .where(eq(vms.id, kept.vm.id));
    near(await releaseAt(kept), minutesFromNow(28));
    expect(await releaseAt(await idleVm(30, 120, null))).toBeNull();
    expect(
      await releaseAt(await idleVm(30, 120, 20, { lastHeartbeatAt: minutesAgo(5) })),
    ).toBeNull();
    expect(await releaseAt(await idleVm(null, 120, 20))).toBeNull();
  });

  it("reports the hold limit when both limits have passed", async () => {
    const fleet = await makeFleet(t.db, { maxHoldMinutes: 60, idleReleaseMinutes: 30 });
    const holder = await makeUser(t.db);
    const [vm] = await makeVms(t.db, fleet, 1, "claimed", {
      holderId: holder.id,
      claimedAt: minutesAgo(90),
      assignmentId: crypto.randomUUID(),
      idleSince: minutesAgo(45),
      lastHeartbeatAt: new Date(),
    });
    if (!vm) throw new Error("fixtures");
    const released = await releaseExpiredHolds(t.db);
    expect(released.find((r) => r.vmId === vm.id)?.reason).toBe("hold_expired");
  });
});
