import { and, eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, crdHandoffs, vms } from "../../server/db/schema";
import { lastEndedHold, releaseExpiredHolds } from "../../server/domain/hold-limits";
import { forceReleaseVm } from "../../server/domain/vm-admin";
import { allJobs } from "../../server/jobs/definitions";
import { JobRunner } from "../../server/jobs/runner";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";

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
    expect(released).toContainEqual({ vmId: vm.id, holderId: holder.id, maxHoldMinutes: 60 });
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
      maxHoldMinutes: 60,
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
      maxHoldMinutes: null,
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
    const id = await runner.send("vm.expire-holds", {});
    if (!id) throw new Error("not enqueued");
    const deadline = Date.now() + 20_000;
    for (;;) {
      const job = await runner.boss.getJobById("vm.expire-holds", id);
      if (job && ["completed", "failed"].includes(job.state)) {
        expect(job.state).toBe("completed");
        break;
      }
      if (Date.now() > deadline) throw new Error(`job still ${job?.state}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect((await vmRow(vm.id))?.state).toBe("releasing");
  });
});
