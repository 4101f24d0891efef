import { and, eq, inArray, isNotNull, ne, notInArray, sql } from "drizzle-orm";
import type { Db, DbOrTx } from "../db/client";
import {
  type Fleet,
  fleets,
  operations,
  type RecoveryStep,
  users,
  type Vm,
  type VmRecovery,
  type VmState,
  vmRecoveries,
  vms,
} from "../db/schema";
import type { Mailer } from "../mail";
import { audit } from "./audit";
import { DomainError } from "./errors";
import { SILENT_REASON_PREFIX } from "./health";
import { requestOperation } from "./operations";
import {
  DEFAULT_RECOVERY_POLICY,
  type RecoveryPolicy,
  type RecoveryPolicyPatch,
  recoveryPolicyOf,
  recoveryPolicySchema,
} from "./recovery-policy";
import { type Actor, systemActor, transition } from "./vm-state";
import { emitEvent } from "./webhook-events";

/*
 * Automatic recovery: VMs that are unhealthy, silent or stuck go through warm reboot (the agent
 * reboots its machine) → cold reboot (the driver, as an operation) → replace (a new VM in its
 * place, as an operation) → failed. Each step is tried up to the policy's count, with a cooldown
 * between attempts; a held VM's holder is told before each step. Every decision is an audit row
 * (`recovery.*`), so a VM's whole history is in the audit log.
 */

/** The first agent protocol version that understands the `reboot` command. */
export const REBOOT_MIN_PROTOCOL_VERSION = 3;

export type Problem = "unhealthy" | "silent" | "stuck_booting" | "stuck_rebooting";

type VmView = Pick<
  Vm,
  | "state"
  | "healthy"
  | "healthReasons"
  | "lastHeartbeatAt"
  | "stateChangedAt"
  | "holderId"
  | "agentProtocolVersion"
  | "createdAt"
>;

const minutesAgo = (now: Date, at: Date | null, minutes: number) =>
  at === null || now.getTime() - at.getTime() >= minutes * 60_000;

/** What is wrong with a VM under this policy at `now`, or null when nothing (or not ours to fix). */
export function problemOf(vm: VmView, policy: RecoveryPolicy, now: Date): Problem | null {
  switch (vm.state) {
    case "booting":
      return minutesAgo(now, vm.stateChangedAt, policy.stuckBootingMinutes)
        ? "stuck_booting"
        : null;
    case "rebooting":
      return minutesAgo(now, vm.stateChangedAt, policy.stuckRebootingMinutes)
        ? "stuck_rebooting"
        : null;
    case "ready":
    case "claimed":
    case "draining":
    case "releasing":
      if (minutesAgo(now, vm.lastHeartbeatAt ?? vm.stateChangedAt, policy.silentMinutes))
        return "silent";
      // A VM being wiped finishes its wipe first; its health is judged once it is back.
      if (vm.state === "releasing") return null;
      // Unhealthy only because the silent sweep said so (its threshold is shorter): that is the
      // silent rule's to judge, once the agent has been quiet for the policy's time.
      if (!vm.healthy && vm.healthReasons[0]?.startsWith(SILENT_REASON_PREFIX)) return null;
      return vm.healthy ? null : "unhealthy";
    default:
      // provisioning belongs to its operation; terminating, terminated and failed are done.
      return null;
  }
}

export type RecoveryDecision =
  | { kind: "wait"; why: "grace" | "cooldown" | "notice" }
  | { kind: "notify"; next: RecoveryStep | "give_up" }
  | { kind: "act"; step: RecoveryStep }
  | { kind: "give_up" };

const LADDER: readonly RecoveryStep[] = ["warm_reboot", "cold_reboot", "replace"];

function maxAttempts(policy: RecoveryPolicy, step: RecoveryStep): number {
  if (step === "warm_reboot") return policy.maxWarmReboots;
  if (step === "cold_reboot") return policy.maxColdReboots;
  return policy.maxReplacements;
}

/**
 * The escalation rule, pure (a simulation with a virtual clock calls it): given what is wrong,
 * the VM, the recovery so far (null: first seen now) and the policy, what to do at `now`.
 */
export function decideRecovery(input: {
  problem: Problem;
  vm: VmView;
  record: Pick<
    VmRecovery,
    "detectedAt" | "step" | "stepAttempts" | "lastAttemptAt" | "noticeAt" | "noticeHolderId"
  > | null;
  policy: RecoveryPolicy;
  now: Date;
}): RecoveryDecision {
  const { problem, vm, record, policy, now } = input;
  const detectedAt = record?.detectedAt ?? now;
  if (problem === "unhealthy" && !minutesAgo(now, detectedAt, policy.unhealthyGraceMinutes))
    return { kind: "wait", why: "grace" };
  if (record?.lastAttemptAt && !minutesAgo(now, record.lastAttemptAt, policy.cooldownMinutes))
    return { kind: "wait", why: "cooldown" };

  // A warm reboot needs an agent that is listening and knows the command, on a VM that is up.
  const warmPossible =
    problem === "unhealthy" &&
    (vm.agentProtocolVersion ?? 0) >= REBOOT_MIN_PROTOCOL_VERSION &&
    (["ready", "claimed", "draining"] as VmState[]).includes(vm.state);
  // A VM being wiped cannot go to `rebooting` (vm-state.ts): only a replacement helps it.
  const rebootPossible = vm.state !== "releasing";
  const allowed = (step: RecoveryStep) =>
    step === "replace" || (rebootPossible && (step !== "warm_reboot" || warmPossible));

  const from = record?.step ? LADDER.indexOf(record.step) : 0;
  let next: RecoveryStep | "give_up" = "give_up";
  for (let i = from; i < LADDER.length; i++) {
    const step = LADDER[i] as RecoveryStep;
    const used = record?.step === step ? record.stepAttempts : 0;
    if (allowed(step) && used < maxAttempts(policy, step)) {
      next = step;
      break;
    }
  }

  if (vm.holderId) {
    const told = record?.noticeAt && record.noticeHolderId === vm.holderId;
    if (!told) return { kind: "notify", next };
    if (!minutesAgo(now, record.noticeAt, policy.holderNoticeMinutes))
      return { kind: "wait", why: "notice" };
  }
  return next === "give_up" ? { kind: "give_up" } : { kind: "act", step: next };
}

/** How the holder of a VM about to be rebooted is told by email (absent without SMTP). */
export type RecoveryNoticeMail = { mailer: Mailer; from: string; publicUrl: string };

export type RecoveryOptions = {
  now?: Date;
  mail?: RecoveryNoticeMail;
  log?: { warn: (obj: object, msg: string) => void };
};

export type RecoveryOutcome = {
  vmId: string;
  name: string;
  problem: Problem | "recovered";
  decision: RecoveryDecision["kind"] | "recovered" | "busy";
  step?: RecoveryStep;
};

const STEP_WORDS: Record<RecoveryStep | "give_up", string> = {
  warm_reboot: "reboot",
  cold_reboot: "restart",
  replace: "replace",
  give_up: "take out of service",
};

const PROBLEM_WORDS: Record<Problem, string> = {
  unhealthy: "it reports itself unhealthy",
  silent: "its agent stopped reporting",
  stuck_booting: "it has not finished starting",
  stuck_rebooting: "it has not come back from a reboot",
};

/**
 * One pass over every fleet with recovery enabled. One runner at a time: a transaction-scoped
 * advisory lock makes a second worker (or an overlapping run) skip. Each VM's step commits on
 * its own, so one VM's failure does not undo another's.
 */
export async function runRecovery(
  db: Db,
  options: RecoveryOptions = {},
): Promise<{ skipped: true } | { skipped: false; outcomes: RecoveryOutcome[] }> {
  const now = options.now ?? new Date();
  return db.transaction(async (tx) => {
    const [lock] = await tx.execute<{ ok: boolean }>(
      sql`SELECT pg_try_advisory_xact_lock(hashtext('lablink:recovery')) AS ok`,
    );
    if (!lock?.ok) return { skipped: true as const };
    const outcomes: RecoveryOutcome[] = [];
    const targets = await db
      .select()
      .from(fleets)
      .where(notInArray(fleets.status, ["creating", "destroying", "destroyed"]));
    for (const fleet of targets) {
      const policy = recoveryPolicyOf(fleet.recoveryPolicy);
      // Bring-your-own machines are someone's workstation: LabLink neither powers nor replaces them.
      if (!policy.enabled || fleet.driver === "byo") continue;
      for (const o of await recoverFleet(db, fleet, policy, now, options)) outcomes.push(o);
    }
    return { skipped: false as const, outcomes };
  });
}

async function recoverFleet(
  db: Db,
  fleet: Fleet,
  policy: RecoveryPolicy,
  now: Date,
  options: RecoveryOptions,
): Promise<RecoveryOutcome[]> {
  const outcomes: RecoveryOutcome[] = [];
  const rows = await db
    .select({ vm: vms, record: vmRecoveries })
    .from(vms)
    .leftJoin(vmRecoveries, eq(vmRecoveries.vmId, vms.id))
    .where(and(eq(vms.fleetId, fleet.id), ne(vms.state, "terminated")));
  const replaced = await db
    .select({ record: vmRecoveries, name: vms.name })
    .from(vmRecoveries)
    .innerJoin(vms, eq(vms.id, vmRecoveries.vmId))
    .where(and(eq(vms.fleetId, fleet.id), eq(vms.state, "terminated")));
  const busy = await fleetBusy(db, fleet.id);

  for (const { vm, record: own } of rows) {
    const problem = problemOf(vm, policy, now);
    // A replacement carries on the history of the VM it replaced (same fleet and name): its
    // replacements are counted, so a fleet whose VMs never come up ends in `failed`.
    const predecessor = replaced.find(
      (r) => r.name === vm.name && (r.record.lastAttemptAt ?? now) <= vm.createdAt,
    )?.record;
    if (!problem && own && vm.state === "failed") {
      // Marked failed by an admin (or an operation) meanwhile: nothing left to recover.
      await db.delete(vmRecoveries).where(eq(vmRecoveries.vmId, vm.id));
      continue;
    }
    if (!problem) {
      const done = own ?? predecessor;
      const inService = (["ready", "claimed", "draining", "releasing"] as VmState[]).includes(
        vm.state,
      );
      if (done && inService) {
        await db.transaction(async (t) => {
          await t.delete(vmRecoveries).where(eq(vmRecoveries.vmId, done.vmId));
          await audit(
            t,
            systemActor,
            "recovery.recovered",
            { kind: "vm", id: vm.id },
            {
              attempts: done.totalAttempts,
              lastStep: done.step,
              ...(done.vmId !== vm.id ? { replacedVmId: done.vmId } : {}),
            },
          );
        });
        outcomes.push({ vmId: vm.id, name: vm.name, problem: "recovered", decision: "recovered" });
      }
      continue;
    }

    let record = own;
    if (!record) {
      record = await startEpisode(db, vm, problem, now, predecessor ?? null);
    } else if (record.problem !== problem) {
      await db.update(vmRecoveries).set({ problem }).where(eq(vmRecoveries.vmId, vm.id));
      record = { ...record, problem };
    }

    const decision = decideRecovery({ problem, vm, record, policy, now });
    const base = { vmId: vm.id, name: vm.name, problem };
    if (decision.kind === "wait") {
      outcomes.push({ ...base, decision: "wait" });
      continue;
    }
    if (decision.kind === "notify") {
      await notifyHolder(db, vm, fleet, problem, decision.next, policy, now, options);
      outcomes.push({ ...base, decision: "notify" });
      if (policy.holderNoticeMinutes > 0) continue;
    }
    const step =
      decision.kind === "act"
        ? decision.step
        : decision.kind === "notify"
          ? decision.next
          : "give_up";
    if (step === "give_up") {
      await giveUp(db, vm, fleet, record, problem);
      outcomes.push({ ...base, decision: "give_up" });
      continue;
    }
    if (step !== "warm_reboot" && busy) {
      outcomes.push({ ...base, decision: "busy", step });
      continue;
    }
    const acted = await attempt(db, vm, fleet, record, problem, step, now);
    if (acted === "busy") {
      outcomes.push({ ...base, decision: "busy", step });
      continue;
    }
    outcomes.push({ ...base, decision: "act", step });
  }
  return outcomes;
}

async function fleetBusy(db: DbOrTx, fleetId: string): Promise<boolean> {
  const [op] = await db
    .select({ id: operations.id })
    .from(operations)
    .where(and(eq(operations.fleetId, fleetId), inArray(operations.status, ["queued", "running"])))
    .limit(1);
  return op !== undefined;
}

async function startEpisode(
  db: Db,
  vm: Vm,
  problem: Problem,
  now: Date,
  predecessor: VmRecovery | null,
): Promise<VmRecovery> {
  return db.transaction(async (t) => {
    const [row] = await t
      .insert(vmRecoveries)
      .values({
        vmId: vm.id,
        detectedAt: now,
        problem,
        // A replacement inherits where its predecessor's recovery stood (not its cooldown).
        step: predecessor?.step ?? null,
        stepAttempts: predecessor?.stepAttempts ?? 0,
        totalAttempts: predecessor?.totalAttempts ?? 0,
      })
      .onConflictDoNothing()
      .returning();
    if (predecessor) await t.delete(vmRecoveries).where(eq(vmRecoveries.vmId, predecessor.vmId));
    await audit(
      t,
      systemActor,
      "recovery.detected",
      { kind: "vm", id: vm.id },
      {
        problem,
        state: vm.state,
        reasons: vm.healthReasons,
        ...(predecessor
          ? { replacedVmId: predecessor.vmId, attempts: predecessor.totalAttempts }
          : {}),
      },
    );
    if (row) return row;
    const [existing] = await t.select().from(vmRecoveries).where(eq(vmRecoveries.vmId, vm.id));
    if (!existing) throw new Error("recovery row vanished");
    return existing;
  });
}

async function notifyHolder(
  db: Db,
  vm: Vm,
  fleet: Fleet,
  problem: Problem,
  next: RecoveryStep | "give_up",
  policy: RecoveryPolicy,
  now: Date,
  options: RecoveryOptions,
) {
  const holderId = vm.holderId;
  if (!holderId) return;
  const actAt = new Date(now.getTime() + policy.holderNoticeMinutes * 60_000);
  await db.transaction(async (t) => {
    await t
      .update(vmRecoveries)
      .set({ noticeAt: now, noticeHolderId: holderId, noticeNext: next })
      .where(eq(vmRecoveries.vmId, vm.id));
    await audit(
      t,
      systemActor,
      "recovery.holder_notified",
      { kind: "vm", id: vm.id },
      {
        holderId,
        problem,
        next,
        actAt: actAt.toISOString(),
      },
    );
    await emitEvent(t, {
      type: "recovery.holder_notice",
      summary: `VM ${vm.name} (held) will ${STEP_WORDS[next]} at ${actAt.toISOString()}: ${PROBLEM_WORDS[problem]}`,
      data: { vmId: vm.id, name: vm.name, fleetId: fleet.id, holderId, problem, next, actAt },
    });
  });
  if (!options.mail) return;
  const [user] = await db
    .select({ email: users.email, name: users.name })
    .from(users)
    .where(eq(users.id, holderId));
  if (!user?.email) return;
  const minutes = policy.holderNoticeMinutes;
  try {
    await options.mail.mailer.sendMail({
      from: options.mail.from,
      to: user.email,
      subject: `Your LabLink VM ${vm.name} will be restarted${minutes > 0 ? ` in ${minutes} min` : ""}`,
      text:
        `Hello ${user.name ?? user.email},\n\n` +
        `Your VM ${vm.name} is not working properly: ${PROBLEM_WORDS[problem]}. ` +
        `LabLink will ${STEP_WORDS[next]} it at ${actAt.toISOString().slice(11, 16)} UTC` +
        `${minutes > 0 ? `, in about ${minutes} min` : ""}.\n\n` +
        (next === "replace" || next === "give_up"
          ? "The VM will not come back to you: save and copy off your work now, then claim another one.\n\n"
          : "A restart ends running programs: save your work now. The VM comes back to you afterwards.\n\n") +
        `My VM: ${new URL("/", options.mail.publicUrl).toString()}\n`,
    });
  } catch (err) {
    // The portal banner and the webhook already carry the notice; a mail failure is not fatal.
    options.log?.warn({ err, vmId: vm.id }, "could not email the recovery notice");
  }
}

async function attempt(
  db: Db,
  vm: Vm,
  fleet: Fleet,
  record: VmRecovery,
  problem: Problem,
  step: RecoveryStep,
  now: Date,
): Promise<"done" | "busy"> {
  const stepAttempts = record.step === step ? record.stepAttempts + 1 : 1;
  const details = {
    problem,
    step,
    attempt: stepAttempts,
    totalAttempts: record.totalAttempts + 1,
    reasons: vm.healthReasons,
    ...(vm.holderId ? { holderId: vm.holderId } : {}),
  };
  try {
    await db.transaction(async (t) => {
      let operationId: string | null = null;
      if (step === "warm_reboot") {
        await transition(t, {
          vmId: vm.id,
          from: vm.state,
          to: "rebooting",
          actor: systemActor,
          action: "recovery.warm_reboot",
          details,
        });
      } else {
        const op = await requestOperation(t, {
          fleetId: fleet.id,
          vmId: vm.id,
          kind: step === "cold_reboot" ? "vm.reboot" : "vm.replace",
          params: {
            vmName: vm.name,
            recovery: true,
            ...(step === "cold_reboot" ? { cold: true } : {}),
          },
          actor: systemActor,
          maxAttempts: 1,
        });
        operationId = op.id;
        await audit(
          t,
          systemActor,
          `recovery.${step}`,
          { kind: "vm", id: vm.id },
          {
            ...details,
            operationId,
          },
        );
      }
      await t
        .update(vmRecoveries)
        .set({
          step,
          stepAttempts,
          totalAttempts: record.totalAttempts + 1,
          lastAttemptAt: now,
          operationId,
          // Each step needs its own notice to a holder.
          noticeAt: null,
          noticeHolderId: null,
          noticeNext: null,
        })
        .where(eq(vmRecoveries.vmId, vm.id));
    });
    return "done";
  } catch (e) {
    // Another operation took the fleet, or the VM moved on meanwhile: look again next run.
    if (
      e instanceof DomainError &&
      (e.code === "STATE_CONFLICT" || e.code === "ILLEGAL_TRANSITION")
    )
      return "busy";
    throw e;
  }
}

async function giveUp(db: Db, vm: Vm, fleet: Fleet, record: VmRecovery, problem: Problem) {
  const reason = `automatic recovery gave up after ${record.totalAttempts} attempt(s): ${PROBLEM_WORDS[problem]}`;
  await db.transaction(async (t) => {
    await transition(t, {
      vmId: vm.id,
      to: "failed",
      actor: systemActor,
      action: "recovery.gave_up",
      patch: { healthy: false, healthReasons: [reason, ...vm.healthReasons].slice(0, 20) },
      details: { problem, attempts: record.totalAttempts, lastStep: record.step, reason },
    });
    await t.delete(vmRecoveries).where(eq(vmRecoveries.vmId, vm.id));
    await emitEvent(t, {
      type: "recovery.gave_up",
      summary: `Automatic recovery gave up on VM ${vm.name} after ${record.totalAttempts} attempt(s)`,
      data: {
        vmId: vm.id,
        name: vm.name,
        fleetId: fleet.id,
        problem,
        attempts: record.totalAttempts,
        lastStep: record.step,
      },
    });
  });
}

/** The recovery under way for a VM (the VM page and My VM show it); null when none. */
export async function recoveryOf(db: DbOrTx, vmId: string): Promise<VmRecovery | null> {
  const [row] = await db.select().from(vmRecoveries).where(eq(vmRecoveries.vmId, vmId));
  return row ?? null;
}

/** Whether the agent should reboot its machine now: a warm reboot is pending for this boot. */
export async function warmRebootPending(db: DbOrTx, vm: Vm): Promise<boolean> {
  if (vm.state !== "rebooting") return false;
  const [row] = await db
    .select({ step: vmRecoveries.step, at: vmRecoveries.lastAttemptAt })
    .from(vmRecoveries)
    .where(and(eq(vmRecoveries.vmId, vm.id), isNotNull(vmRecoveries.lastAttemptAt)));
  if (row?.step !== "warm_reboot" || !row.at) return false;
  // A VM that has already come back from this reboot (registered on a new boot after it went
  // rebooting) may stay rebooting until its container is ready: it must not be told to reboot again.
  const t = vm.bootTimings;
  const registeredAt =
    t && t.bootId === vm.bootId && t.registeredAt ? new Date(t.registeredAt) : null;
  return !(registeredAt && registeredAt > vm.stateChangedAt);
}

/**
 * Changes a fleet's recovery policy: the settings given replace the current ones, the rest stay.
 * Only settings that differ from the defaults are stored. Audited with before and after.
 */
export async function setRecoveryPolicy(
  db: Db,
  params: { fleetId: string; patch: RecoveryPolicyPatch; actor: Actor },
): Promise<RecoveryPolicy> {
  return db.transaction(async (tx) => {
    const [fleet] = await tx
      .select({ name: fleets.name, status: fleets.status, stored: fleets.recoveryPolicy })
      .from(fleets)
      .where(eq(fleets.id, params.fleetId))
      .for("update");
    if (!fleet) throw new DomainError("NOT_FOUND", "No such fleet.", { fleetId: params.fleetId });
    if (fleet.status === "destroyed" || fleet.status === "destroying")
      throw new DomainError("STATE_CONFLICT", `Fleet ${fleet.name} is ${fleet.status}.`, {
        status: fleet.status,
      });
    const before = recoveryPolicyOf(fleet.stored);
    const after = recoveryPolicySchema.parse({ ...before, ...params.patch });
    const overrides = Object.fromEntries(
      Object.entries(after).filter(
        ([k, v]) => DEFAULT_RECOVERY_POLICY[k as keyof RecoveryPolicy] !== v,
      ),
    );
    await tx
      .update(fleets)
      .set({ recoveryPolicy: overrides, updatedAt: sql`now()` })
      .where(eq(fleets.id, params.fleetId));
    await audit(
      tx,
      params.actor,
      "fleet.recovery_policy",
      { kind: "fleet", id: params.fleetId },
      {
        from: before,
        to: after,
      },
    );
    return after;
  });
}
