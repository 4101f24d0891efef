import { and, asc, eq, gt, inArray, max, sql } from "drizzle-orm";
import { z } from "zod";
import type { Db, DbOrTx } from "../db/client";
import { auditEvents, type Fleet, fleets, operations, vms } from "../db/schema";
import { audit } from "./audit";
import { upcomingUnheld } from "./bookings";
import { DomainError, isDomainError } from "./errors";
import { liveFleet } from "./live-fleet";
import { requestOperation } from "./operations";
import { scaleFleet } from "./provisioning";
import { type Actor, systemActor, transition } from "./vm-state";

/**
 * A fleet's warm pool: how many unclaimed, healthy (`ready`) VMs it keeps waiting for researchers,
 * and the most VMs it may have in all. Lives in `fleets.config.warmPool`; a fleet without it is
 * sized by hand (scale operations, one-off schedules) as before.
 */
export const warmPoolPolicySchema = z.strictObject({
  desiredReady: z
    .number()
    .int()
    .min(0, "The ready count cannot be negative.")
    .max(500, "At most 500 ready VMs."),
  maxSize: z.number().int().min(0, "The maximum size cannot be negative.").max(500),
  paused: z.boolean().default(false),
  /** Why the pool is paused (the admin's note, or the failure that made it give up). */
  pausedReason: z.string().max(500).nullable().default(null),
  /** First wait after a failed launch; doubles with each further consecutive failure. */
  backoffBaseS: z.number().int().min(1).max(86_400).default(60),
  backoffMaxS: z.number().int().min(1).max(86_400).default(3_600),
  /** After this many failed launches in a row the pool pauses itself until an admin resumes it. */
  maxConsecutiveFailures: z.number().int().min(1).max(100).default(5),
});
export type WarmPoolPolicy = z.infer<typeof warmPoolPolicySchema>;
export type WarmPoolPolicyInput = z.input<typeof warmPoolPolicySchema>;

export const WARM_POOL_DEFAULTS = {
  paused: false,
  pausedReason: null,
  backoffBaseS: 60,
  backoffMaxS: 3_600,
  maxConsecutiveFailures: 5,
} as const satisfies Partial<WarmPoolPolicy>;

/** A fleet's policy (`fleets.warm_pool`), or null when it has no warm pool (or a broken one). */
export function warmPoolPolicyOf(raw: unknown): WarmPoolPolicy | null {
  if (raw === undefined || raw === null) return null;
  const parsed = warmPoolPolicySchema.safeParse(raw);
  return parsed.success ? parsed.data : null;
}

export type WarmPoolCounts = {
  /** Unclaimed, healthy, waiting for a researcher. */
  ready: number;
  /** Provisioning or booting: will be ready soon (or fail). */
  booting: number;
  /** Claimed by a researcher (or being handed back): not part of the pool. */
  held: number;
  failed: number;
  /** Every VM not terminated, whatever its state. */
  total: number;
  /**
   * Bookings starting within their lead window that have no VM set aside yet: each needs one
   * more ready VM (VMs already set aside count as held).
   */
  booked?: number;
};

export type WarmPoolFailures = {
  /** Launch failures since the last launch that worked. */
  consecutive: number;
  lastAt: Date | null;
};

export type WarmPoolStatus = "ok" | "paused" | "backoff" | "gave_up" | "at_max";

export type WarmPoolPlan = {
  /** The fleet size to ask for (a scale operation when it differs from the current one). */
  targetSize: number;
  /** Failed VMs should be terminated and replaced by fresh ones now. */
  replaceFailed: boolean;
  status: WarmPoolStatus;
  /** For the fleet card: why the fleet is not at the size the policy wants; null when it is. */
  reason: string | null;
  /** In backoff: when launching may start again. */
  retryAt: Date | null;
};

export type WarmPoolInput = {
  now: Date;
  policy: WarmPoolPolicy;
  counts: WarmPoolCounts;
  failures: WarmPoolFailures;
};

/** Wait after `consecutive` failures: base, 2×base, 4×base... capped at `backoffMaxS`. */
export function backoffSeconds(
  policy: Pick<WarmPoolPolicy, "backoffBaseS" | "backoffMaxS">,
  consecutive: number,
) {
  if (consecutive <= 0) return 0;
  // 2^30 × base already exceeds any cap; bounding the exponent keeps the number finite.
  const factor = 2 ** Math.min(consecutive - 1, 30);
  return Math.min(policy.backoffBaseS * factor, policy.backoffMaxS);
}

/**
 * What the warm-pool reconciler should do for one fleet, from its policy, what it has and how its
 * recent launches went. Pure: the simulation drives it with a virtual clock.
 *
 * The target is `held + desiredReady` (a claimed VM leaves the pool, so a new one is started to
 * keep the ready count), capped at `maxSize`. Shrinking is always allowed; growing and replacing
 * failed VMs wait out the backoff after a failed launch, and stop for good (status `gave_up`, the
 * reconciler then pauses the pool) after `maxConsecutiveFailures` failures in a row.
 */
export function planWarmPool(input: WarmPoolInput): WarmPoolPlan {
  const { now, policy, counts, failures } = input;
  const wanted = counts.held + (counts.booked ?? 0) + policy.desiredReady;
  const capped = Math.min(policy.maxSize, wanted);
  // While launching is on hold, failed VMs keep their slots (they are not being replaced), so a
  // shrink never takes a working VM in place of a failed one.
  const noGrowth = Math.min(capped + counts.failed, counts.total);

  if (policy.paused) {
    return {
      targetSize: counts.total,
      replaceFailed: false,
      status: "paused",
      reason: policy.pausedReason ? `Paused: ${policy.pausedReason}` : "Paused by an admin.",
      retryAt: null,
    };
  }
  if (failures.consecutive >= policy.maxConsecutiveFailures) {
    return {
      targetSize: noGrowth,
      replaceFailed: false,
      status: "gave_up",
      reason: `Gave up after ${failures.consecutive} failed launches in a row; resume the pool to try again.`,
      retryAt: null,
    };
  }
  if (failures.consecutive > 0 && failures.lastAt) {
    const retryAt = new Date(
      failures.lastAt.getTime() + backoffSeconds(policy, failures.consecutive) * 1000,
    );
    if (retryAt.getTime() > now.getTime()) {
      const short = capped > counts.total || counts.failed > 0;
      return {
        targetSize: noGrowth,
        replaceFailed: false,
        status: "backoff",
        reason: short
          ? `Backing off until ${retryAt.toISOString()} after ${failures.consecutive} failed launch${failures.consecutive === 1 ? "" : "es"}.`
          : null,
        retryAt,
      };
    }
  }
  if (wanted > policy.maxSize) {
    return {
      targetSize: capped,
      replaceFailed: counts.failed > 0,
      status: "at_max",
      reason: `At its maximum size of ${policy.maxSize}: ${counts.held} held + ${counts.booked ? `${counts.booked} for bookings + ` : ""}${policy.desiredReady} ready wanted.`,
      retryAt: null,
    };
  }
  return {
    targetSize: capped,
    replaceFailed: counts.failed > 0,
    status: "ok",
    reason: null,
    retryAt: null,
  };
}

/** What the reconciler remembers between runs, in `fleets.warm_pool_state`. */
export const warmPoolStateSchema = z.object({
  consecutiveFailures: z.number().int().min(0).default(0),
  lastFailureAt: z.string().nullable().default(null),
  /** Failed-before-ready VMs already counted (still failed), so each counts once. */
  countedVmIds: z.array(z.string()).default([]),
  /** Audit rows up to this id were looked at for VMs becoming ready. */
  auditWatermark: z.number().nullable().default(null),
  /** Failed operations finished up to this time were counted. */
  opsWatermark: z.string().nullable().default(null),
  status: z.enum(["ok", "paused", "backoff", "gave_up", "at_max", "busy"]).default("ok"),
  reason: z.string().nullable().default(null),
  retryAt: z.string().nullable().default(null),
  targetSize: z.number().nullable().default(null),
  checkedAt: z.string().nullable().default(null),
});
export type WarmPoolState = z.infer<typeof warmPoolStateSchema>;

export function warmPoolStateOf(raw: unknown): WarmPoolState {
  const parsed = warmPoolStateSchema.safeParse(raw ?? {});
  return parsed.success ? parsed.data : warmPoolStateSchema.parse({});
}

/** Key of the advisory lock that keeps a second reconciler (another worker) out. */
export const WARM_POOL_LOCK_KEY = 0x11_4a_57_50; // "\x11JWP": unique among this app's locks

export type WarmPoolRun = {
  fleetId: string;
  status: WarmPoolState["status"];
  action: "none" | "scale" | "replace" | "pause";
  targetSize: number;
  reason: string | null;
};

const HELD_STATES = ["claimed", "releasing"] as const;
const BOOTING_STATES = ["provisioning", "booting", "rebooting"] as const;
/** Operations whose failure is a failed launch. */
const LAUNCH_KINDS = ["fleet.create", "fleet.scale", "vm.replace"] as const;

async function countVms(db: DbOrTx, fleetId: string) {
  const rows = await db
    .select({
      state: vms.state,
      healthy: vms.healthy,
      holderId: vms.holderId,
      reserved: vms.reservedBookingId,
    })
    .from(vms)
    .where(and(eq(vms.fleetId, fleetId), sql`${vms.state} <> 'terminated'`));
  const counts: WarmPoolCounts = { ready: 0, booting: 0, held: 0, failed: 0, total: rows.length };
  for (const v of rows) {
    // A ready VM set aside for a booking is as good as held: it is not waiting for walk-ins.
    if (v.holderId || v.reserved || (HELD_STATES as readonly string[]).includes(v.state))
      counts.held += 1;
    else if (v.state === "ready" && v.healthy) counts.ready += 1;
    else if ((BOOTING_STATES as readonly string[]).includes(v.state)) counts.booting += 1;
    else if (v.state === "failed") counts.failed += 1;
  }
  return counts;
}

/**
 * Folds what happened since the last run into the failure count: a VM of the fleet reaching
 * `ready` resets it; each VM that failed without ever having been ready, and each launch
 * operation that failed, adds one (dated `now`, the caller's clock, so a virtual clock works).
 */
async function observeFailures(db: DbOrTx, fleetId: string, prev: WarmPoolState, now: Date) {
  const next = { ...prev };
  const [{ maxAudit } = { maxAudit: null }] = await db
    .select({ maxAudit: max(auditEvents.id) })
    .from(auditEvents);
  const [{ maxOp } = { maxOp: null }] = await db
    // As text: a JS Date would drop the microseconds and count the last failure again.
    .select({ maxOp: sql<string | null>`max(${operations.finishedAt})::text` })
    .from(operations)
    .where(eq(operations.fleetId, fleetId));

  if (prev.auditWatermark !== null) {
    const [ok] = await db
      .select({ id: auditEvents.id })
      .from(auditEvents)
      .innerJoin(vms, sql`${vms.id}::text = ${auditEvents.targetId}`)
      .where(
        and(
          eq(vms.fleetId, fleetId),
          eq(auditEvents.targetKind, "vm"),
          eq(auditEvents.toState, "ready"),
          gt(auditEvents.id, prev.auditWatermark),
        ),
      )
      .limit(1);
    if (ok) next.consecutiveFailures = 0;
  }
  let added = 0;
  const failedVms = await db
    .select({ id: vms.id })
    .from(vms)
    .where(
      and(
        eq(vms.fleetId, fleetId),
        eq(vms.state, "failed"),
        sql`NOT EXISTS (SELECT 1 FROM audit_events a WHERE a.target_kind = 'vm'
          AND a.target_id = ${vms.id}::text AND a.to_state IN ('ready', 'claimed'))`,
      ),
    );
  // On the first run (a pool just turned on) VMs already failed are history, not this pool's launches.
  if (prev.auditWatermark !== null) {
    for (const v of failedVms) if (!prev.countedVmIds.includes(v.id)) added += 1;
  }
  next.countedVmIds = failedVms.map((v) => v.id);
  if (prev.opsWatermark !== null) {
    const failedOps = await db
      .select({ id: operations.id })
      .from(operations)
      .where(
        and(
          eq(operations.fleetId, fleetId),
          eq(operations.status, "failed"),
          inArray(operations.kind, [...LAUNCH_KINDS]),
          sql`${operations.finishedAt} > ${prev.opsWatermark}::timestamptz`,
        ),
      );
    added += failedOps.length;
  }
  if (added > 0) {
    next.consecutiveFailures += added;
    next.lastFailureAt = now.toISOString();
  }
  next.auditWatermark = maxAudit ?? prev.auditWatermark ?? 0;
  next.opsWatermark = maxOp ?? prev.opsWatermark ?? "-infinity";
  return next;
}

async function saveState(db: DbOrTx, fleetId: string, state: WarmPoolState) {
  await db.update(fleets).set({ warmPoolState: state }).where(eq(fleets.id, fleetId));
}

async function reconcileFleet(tx: DbOrTx, fleet: Fleet, policy: WarmPoolPolicy, now: Date) {
  const prev = warmPoolStateOf(fleet.warmPoolState);
  const state = await observeFailures(tx, fleet.id, prev, now);
  const counts = {
    ...(await countVms(tx, fleet.id)),
    booked: await upcomingUnheld(tx, fleet.id, now),
  };
  const plan = planWarmPool({
    now,
    policy,
    counts,
    failures: {
      consecutive: state.consecutiveFailures,
      lastAt: state.lastFailureAt ? new Date(state.lastFailureAt) : null,
    },
  });
  const result: WarmPoolRun = {
    fleetId: fleet.id,
    status: plan.status,
    action: "none",
    targetSize: plan.targetSize,
    reason: plan.reason,
  };
  const [busy] = await tx
    .select({ kind: operations.kind, status: operations.status })
    .from(operations)
    .where(and(eq(operations.fleetId, fleet.id), inArray(operations.status, ["queued", "running"])))
    .limit(1);

  if (plan.status === "gave_up") {
    await tx
      .update(fleets)
      .set({ warmPool: { ...policy, paused: true, pausedReason: plan.reason } })
      .where(eq(fleets.id, fleet.id));
    await audit(
      tx,
      systemActor,
      "fleet.warm_pool_pause",
      { kind: "fleet", id: fleet.id },
      {
        reason: plan.reason,
        consecutiveFailures: state.consecutiveFailures,
      },
    );
    result.action = "pause";
    result.status = "paused";
  } else if (busy) {
    result.status = "busy";
    result.reason = `A ${busy.kind} operation is ${busy.status}.`;
  } else if (fleet.status === "creating") {
    result.status = "busy";
    result.reason = "The fleet is being created.";
  } else if (plan.replaceFailed) {
    const [victim] = await tx
      .select({ id: vms.id, name: vms.name })
      .from(vms)
      .where(and(eq(vms.fleetId, fleet.id), eq(vms.state, "failed")))
      .orderBy(asc(vms.stateChangedAt))
      .limit(1);
    if (victim && (await tryOp(() => replaceFailedVm(tx, fleet.id, victim)))) {
      result.action = "replace";
      result.reason = `Replacing failed VM ${victim.name}.`;
    }
  } else if (
    plan.status === "backoff"
      ? plan.targetSize < counts.total // backing off: shrinking only
      : (plan.status === "ok" || plan.status === "at_max") &&
        (plan.targetSize !== fleet.desiredSize || plan.targetSize > counts.total)
  ) {
    if (await tryOp(() => scaleFleet(tx, fleet.id, plan.targetSize, systemActor))) {
      result.action = "scale";
      result.reason ??= `Scaling to ${plan.targetSize} (${counts.held} held + ${counts.booked ? `${counts.booked} for bookings + ` : ""}${policy.desiredReady} ready).`;
    }
  }
  await saveState(tx, fleet.id, {
    ...state,
    status: result.status,
    reason: result.reason,
    retryAt: plan.retryAt?.toISOString() ?? null,
    targetSize: plan.targetSize,
    checkedAt: now.toISOString(),
  });
  return result;
}

/** Runs a request that may lose the fleet's single operation slot; false when it did. */
async function tryOp(fn: () => Promise<unknown>) {
  try {
    await fn();
    return true;
  } catch (e) {
    if (isDomainError(e) && e.code === "STATE_CONFLICT") return false;
    throw e;
  }
}

/** A failed VM is terminated and a fresh one created in its place (a `vm.replace` operation). */
async function replaceFailedVm(db: DbOrTx, fleetId: string, vm: { id: string; name: string }) {
  return db.transaction(async (tx) => {
    await transition(tx, {
      vmId: vm.id,
      from: "failed",
      to: "terminating",
      actor: systemActor,
      action: "vm.replace",
      details: { reason: "warm pool: failed VMs are replaced" },
    });
    await requestOperation(tx, {
      fleetId,
      vmId: vm.id,
      kind: "vm.replace",
      params: { vmName: vm.name },
      actor: systemActor,
    });
  });
}

/**
 * Applies planWarmPool to every live fleet that has a warm pool: one scale or replace operation
 * per fleet and run at most (operations are single-flight per fleet anyway). Only one reconciler
 * runs at a time across workers: the run holds a transaction-level advisory lock, and a second
 * one that cannot take it returns `{ locked: true }` at once instead of waiting.
 */
export async function reconcileWarmPools(
  db: Db,
  { now = new Date() }: { now?: Date } = {},
): Promise<{ locked: boolean; fleets: WarmPoolRun[] }> {
  return db.transaction(async (tx) => {
    const [lock] = await tx.execute<{ ok: boolean }>(
      sql`SELECT pg_try_advisory_xact_lock(${WARM_POOL_LOCK_KEY}) AS ok`,
    );
    if (!lock?.ok) return { locked: true, fleets: [] };
    const rows = await tx
      .select()
      .from(fleets)
      .where(
        and(
          inArray(fleets.status, ["creating", "active", "scaling", "failed"]),
          sql`${fleets.warmPool} IS NOT NULL`,
          sql`${fleets.driver} <> 'byo'`,
        ),
      )
      .orderBy(asc(fleets.name));
    const runs: WarmPoolRun[] = [];
    for (const fleet of rows) {
      const policy = warmPoolPolicyOf(fleet.warmPool);
      if (!policy) continue;
      runs.push(await reconcileFleet(tx, fleet, policy, now));
    }
    return { locked: false, fleets: runs };
  });
}

/** Turns a fleet's warm pool on, changes it, or (policy null) turns it off. Audited. */
export async function setWarmPool(
  db: Db,
  req: { fleetId: string; policy: WarmPoolPolicyInput | null; actor: Actor },
) {
  return db.transaction(async (tx) => {
    const fleet = await liveFleet(tx, req.fleetId);
    if (fleet.driver === "byo") {
      throw new DomainError(
        "INVALID_INPUT",
        `Fleet ${fleet.name} is bring-your-own: machines join it by enrolling, it has no warm pool.`,
        { field: "policy" },
      );
    }
    const policy = req.policy === null ? null : warmPoolPolicySchema.parse(req.policy);
    if (policy && policy.desiredReady > policy.maxSize) {
      throw new DomainError("INVALID_INPUT", "The ready count cannot exceed the maximum size.", {
        field: "desiredReady",
      });
    }
    await tx
      .update(fleets)
      .set({ warmPool: policy, warmPoolState: null, updatedAt: sql`now()` })
      .where(eq(fleets.id, fleet.id));
    await audit(
      tx,
      req.actor,
      "fleet.warm_pool_set",
      { kind: "fleet", id: fleet.id },
      {
        policy,
      },
    );
    return policy;
  });
}

async function poolOf(tx: DbOrTx, fleetId: string) {
  const fleet = await liveFleet(tx, fleetId);
  const policy = warmPoolPolicyOf(fleet.warmPool);
  if (!policy) {
    throw new DomainError("STATE_CONFLICT", `Fleet ${fleet.name} has no warm pool.`, {
      fleetId,
    });
  }
  return { fleet, policy };
}

/** Pauses a fleet's warm pool: the reconciler leaves its size alone until it is resumed. */
export async function pauseWarmPool(
  db: Db,
  req: { fleetId: string; reason?: string | null; actor: Actor },
) {
  return db.transaction(async (tx) => {
    const { fleet, policy } = await poolOf(tx, req.fleetId);
    const next = { ...policy, paused: true, pausedReason: req.reason?.trim() || null };
    await tx.update(fleets).set({ warmPool: next }).where(eq(fleets.id, fleet.id));
    await audit(
      tx,
      req.actor,
      "fleet.warm_pool_pause",
      { kind: "fleet", id: fleet.id },
      {
        reason: next.pausedReason,
      },
    );
    return next;
  });
}

/** Resumes a paused warm pool and forgets past launch failures (a fresh start after a fix). */
export async function resumeWarmPool(db: Db, req: { fleetId: string; actor: Actor }) {
  return db.transaction(async (tx) => {
    const { fleet, policy } = await poolOf(tx, req.fleetId);
    const next = { ...policy, paused: false, pausedReason: null };
    const state = warmPoolStateOf(fleet.warmPoolState);
    await tx
      .update(fleets)
      .set({
        warmPool: next,
        // The last reconcile's verdict (paused, gave up) no longer holds: the next one says anew.
        warmPoolState: {
          ...state,
          consecutiveFailures: 0,
          lastFailureAt: null,
          retryAt: null,
          status: "ok",
          reason: null,
        },
      })
      .where(eq(fleets.id, fleet.id));
    await audit(
      tx,
      req.actor,
      "fleet.warm_pool_resume",
      { kind: "fleet", id: fleet.id },
      {
        previousReason: policy.pausedReason,
      },
    );
    return next;
  });
}

/** Sets the ready count of a warm pool (a scheduled change); the reconciler does the scaling. */
export async function setDesiredReady(
  db: DbOrTx,
  req: { fleetId: string; desiredReady: number; actor: Actor },
) {
  const { fleet, policy } = await poolOf(db, req.fleetId);
  const next = { ...policy, desiredReady: Math.max(0, Math.min(req.desiredReady, policy.maxSize)) };
  await db.update(fleets).set({ warmPool: next }).where(eq(fleets.id, fleet.id));
  await audit(
    db,
    req.actor,
    "fleet.warm_pool_ready",
    { kind: "fleet", id: fleet.id },
    {
      desiredReady: next.desiredReady,
      from: policy.desiredReady,
    },
  );
  return next;
}
