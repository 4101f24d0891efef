import { and, desc, eq } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { auditEvents, fleets, users, type Vm, vmRecoveries, vms } from "../db/schema";
import { DomainError } from "./errors";
import { type Actor, LIVE_STATES, transition } from "./vm-state";

async function load(db: DbOrTx, vmId: string): Promise<Vm> {
  const [vm] = await db.select().from(vms).where(eq(vms.id, vmId));
  if (!vm) throw new DomainError("NOT_FOUND", "No such VM.", { vmId });
  return vm;
}

/**
 * Drain: no new claims. A VM with a researcher on it stays theirs until they release it, then
 * stays out of the pool (the wipe acknowledgement sends it to `draining`, not `ready`).
 */
export async function drainVm(db: DbOrTx, vmId: string, actor: Actor): Promise<Vm> {
  const vm = await load(db, vmId);
  if (vm.state === "draining") return vm;
  if (vm.state === "releasing") {
    const [updated] = await db
      .update(vms)
      .set({ drainRequested: true })
      .where(eq(vms.id, vmId))
      .returning();
    return updated as Vm;
  }
  return transition(db, {
    vmId,
    from: ["ready", "claimed"],
    to: "draining",
    actor,
    action: "vm.drain",
    patch: { drainRequested: true },
  });
}

/** Undrain: back into service — to its holder if it has one, else into the pool. */
export async function undrainVm(db: DbOrTx, vmId: string, actor: Actor): Promise<Vm> {
  const vm = await load(db, vmId);
  if (vm.state === "releasing" && vm.drainRequested) {
    const [updated] = await db
      .update(vms)
      .set({ drainRequested: false })
      .where(eq(vms.id, vmId))
      .returning();
    return updated as Vm;
  }
  return transition(db, {
    vmId,
    from: "draining",
    to: vm.holderId ? "claimed" : "ready",
    actor,
    action: "vm.undrain",
    patch: { drainRequested: false },
  });
}

/** An admin takes a VM back from its holder; the agent wipes it as on a normal release. */
export async function forceReleaseVm(db: DbOrTx, vmId: string, actor: Actor): Promise<Vm> {
  const vm = await load(db, vmId);
  if (!vm.holderId) {
    throw new DomainError(
      "STATE_CONFLICT",
      `This VM is ${vm.state} and has no holder to release.`,
      {
        state: vm.state,
      },
    );
  }
  return transition(db, {
    vmId,
    from: ["claimed", "draining"],
    to: "releasing",
    actor,
    action: "vm.force_release",
    patch: { releasedAt: new Date() },
    details: { holderId: vm.holderId },
  });
}

/** Marks a live VM failed (out of the pool, holder freed) with the admin's reason. */
export async function markVmFailed(
  db: DbOrTx,
  vmId: string,
  reason: string,
  actor: Actor,
): Promise<Vm> {
  return transition(db, {
    vmId,
    from: LIVE_STATES,
    to: "failed",
    actor,
    action: "vm.mark_failed",
    patch: { healthy: false, healthReasons: [`marked failed by an admin: ${reason}`] },
    details: { reason },
  });
}

/** One VM with its fleet, holder and recent history, for the admin detail page. */
export async function vmDetail(db: DbOrTx, vmId: string) {
  const [row] = await db
    .select({
      vm: vms,
      fleet: {
        id: fleets.id,
        name: fleets.name,
        driver: fleets.driver,
        instanceType: fleets.instanceType,
      },
      holder: { id: users.id, name: users.name, email: users.email },
    })
    .from(vms)
    .innerJoin(fleets, eq(fleets.id, vms.fleetId))
    .leftJoin(users, eq(users.id, vms.holderId))
    .where(eq(vms.id, vmId));
  if (!row) throw new DomainError("NOT_FOUND", "No such VM.", { vmId });
  const history = await db
    .select({
      id: auditEvents.id,
      at: auditEvents.at,
      actorKind: auditEvents.actorKind,
      actorId: auditEvents.actorId,
      action: auditEvents.action,
      fromState: auditEvents.fromState,
      toState: auditEvents.toState,
      details: auditEvents.details,
    })
    .from(auditEvents)
    .where(and(eq(auditEvents.targetKind, "vm"), eq(auditEvents.targetId, vmId)))
    .orderBy(desc(auditEvents.at), desc(auditEvents.id))
    .limit(200);
  const [recovery] = await db
    .select({
      problem: vmRecoveries.problem,
      step: vmRecoveries.step,
      stepAttempts: vmRecoveries.stepAttempts,
      totalAttempts: vmRecoveries.totalAttempts,
      detectedAt: vmRecoveries.detectedAt,
      lastAttemptAt: vmRecoveries.lastAttemptAt,
      noticeAt: vmRecoveries.noticeAt,
    })
    .from(vmRecoveries)
    .where(eq(vmRecoveries.vmId, vmId));
  const { assignmentId: _a, assignmentAckedId: _b, ...vm } = row.vm;
  return {
    ...vm,
    fleet: row.fleet,
    holder: row.holder?.id ? row.holder : null,
    /** Automatic recovery under way (server/domain/recovery.ts); null when none. */
    recovery: recovery ?? null,
    history,
  };
}
