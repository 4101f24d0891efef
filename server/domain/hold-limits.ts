import { and, eq, inArray, isNotNull, or, type SQL, sql } from "drizzle-orm";
import type { Db, DbOrTx } from "../db/client";
import { auditEvents, crdHandoffs, fleets, vms } from "../db/schema";
import { audit } from "./audit";
import { DomainError } from "./errors";
import { liveFleet } from "./live-fleet";
import { type Actor, systemActor, transition } from "./vm-state";

/** States in which a hold can expire: the researcher has the VM (a rebooting VM waits until it is back). */
const EXPIRABLE = ["claimed", "draining"] as const;

/**
 * An idle report counts only while the agent is reporting: a VM whose agent went quiet is not
 * released for idleness on a stale reading (the silent-VM sweep deals with it).
 */
const IDLE_REPORT_FRESH = "2 minutes";

/** When a held VM's hold ends: its fleet's hold limit, plus the hold's extensions, after the claim. */
export const holdEndsAt = (limit: SQL | number) =>
  sql`${vms.claimedAt} + make_interval(mins => ${limit}::int + ${vms.holdExtendedMinutes})`;

/**
 * Since when a held VM counts as idle: the latest of the start of idleness, the claim (a VM idle
 * in the pool before the claim starts its count at the claim) and the holder's last "I'm still
 * using it" (`greatest` skips nulls).
 */
export const idleCountFrom = () =>
  sql`greatest(${vms.idleSince}, ${vms.claimedAt}, ${vms.idleKeptAt})`;

/** When a held VM's idleness releases it: its fleet's idle limit after `idleCountFrom`. */
export const idleEndsAt = (limit: SQL | number) =>
  sql`${idleCountFrom()} + make_interval(mins => ${limit})`;

/**
 * Held VMs whose agent reports them idle right now: no session, no research-process or GPU
 * activity, no input (docs/agent-protocol.md). `inUse` does not matter: research software left
 * open and untouched overnight is in use and idle, and idle is what the limit is about.
 */
export const reportedIdle = () =>
  and(
    isNotNull(vms.idleSince),
    sql`${vms.lastHeartbeatAt} > now() - ${IDLE_REPORT_FRESH}::interval`,
  );

/** VMs a researcher holds now, in a state where a limit can end the hold. */
export const held = () => and(inArray(vms.state, EXPIRABLE), isNotNull(vms.holderId));

const pastHoldLimit = () =>
  and(isNotNull(fleets.maxHoldMinutes), sql`${holdEndsAt(sql`${fleets.maxHoldMinutes}`)} <= now()`);

/** The fleet has an idle limit and the VM's agent reports it idle now. */
const idleCountRunning = () => and(isNotNull(fleets.idleReleaseMinutes), reportedIdle());

const pastIdleLimit = () =>
  and(idleCountRunning(), sql`${idleEndsAt(sql`${fleets.idleReleaseMinutes}`)} <= now()`);

export type ExpiredHold =
  | { reason: "hold_expired"; vmId: string; holderId: string; maxHoldMinutes: number }
  | { reason: "idle"; vmId: string; holderId: string; idleReleaseMinutes: number };

/**
 * Releases every held VM past its fleet's hold limit (`fleets.max_hold_minutes`, audit
 * `vm.hold_expired`) or idle past its fleet's idle limit (`fleets.idle_release_minutes`, audit
 * `vm.idle_released`), through the normal release transition (`releasing`: the agent wipes, then
 * the VM returns to the pool). Each VM is re-checked under a row lock in its own transaction, so a
 * researcher who released meanwhile, or came back to work, or a VM claimed again by someone else,
 * is left alone. Idempotent: a second run finds nothing left to release.
 */
export async function releaseExpiredHolds(db: Db): Promise<ExpiredHold[]> {
  const expiredWhere = and(held(), or(pastHoldLimit(), pastIdleLimit()));
  const candidates = await db
    .select({ id: vms.id })
    .from(vms)
    .innerJoin(fleets, eq(fleets.id, vms.fleetId))
    .where(expiredWhere);

  const released: ExpiredHold[] = [];
  for (const { id } of candidates) {
    const done = await db.transaction(async (tx): Promise<ExpiredHold | null> => {
      // Lock the VM and check again: the hold may have ended, or the VM become busy, since the scan.
      const [vm] = await tx
        .select({
          holderId: vms.holderId,
          claimedAt: vms.claimedAt,
          idleSince: vms.idleSince,
          maxHoldMinutes: fleets.maxHoldMinutes,
          idleReleaseMinutes: fleets.idleReleaseMinutes,
          pastHold: sql<boolean>`coalesce(${pastHoldLimit()}, false)`,
        })
        .from(vms)
        .innerJoin(fleets, eq(fleets.id, vms.fleetId))
        .where(and(eq(vms.id, id), expiredWhere))
        .for("update", { of: vms });
      if (!vm?.holderId) return null;
      const claimedAt = vm.claimedAt?.toISOString() ?? null;
      const outcome: ExpiredHold =
        vm.pastHold && vm.maxHoldMinutes !== null
          ? {
              reason: "hold_expired",
              vmId: id,
              holderId: vm.holderId,
              maxHoldMinutes: vm.maxHoldMinutes,
            }
          : {
              reason: "idle",
              vmId: id,
              holderId: vm.holderId,
              idleReleaseMinutes: vm.idleReleaseMinutes ?? 0,
            };
      try {
        await transition(tx, {
          vmId: id,
          from: EXPIRABLE,
          to: "releasing",
          actor: systemActor,
          action: outcome.reason === "hold_expired" ? "vm.hold_expired" : "vm.idle_released",
          patch: { releasedAt: new Date() },
          details:
            outcome.reason === "hold_expired"
              ? { holderId: vm.holderId, maxHoldMinutes: outcome.maxHoldMinutes, claimedAt }
              : {
                  holderId: vm.holderId,
                  idleReleaseMinutes: outcome.idleReleaseMinutes,
                  idleSince: vm.idleSince?.toISOString() ?? null,
                  claimedAt,
                },
        });
      } catch (e) {
        if (e instanceof DomainError && e.code === "STATE_CONFLICT") return null;
        throw e;
      }
      // As in a researcher's release: no remote-desktop code outlives its assignment.
      await tx.delete(crdHandoffs).where(eq(crdHandoffs.vmId, id));
      return outcome;
    });
    if (done) released.push(done);
  }
  return released;
}

/**
 * When the fleet's idle limit will release a held VM (select it with `vms` joined to `fleets`):
 * the same expression the sweep uses, so My VM shows exactly when the sweep acts. Null when the VM
 * is not reported idle (or its agent is quiet) or the fleet has no idle limit.
 */
export const idleReleaseAtSql = () =>
  sql<Date | null>`CASE WHEN ${idleCountRunning()} THEN ${idleEndsAt(sql`${fleets.idleReleaseMinutes}`)} END`.mapWith(
    vms.claimedAt,
  );

/**
 * The holder says they are still using their idle VM ("I'm still using it" on My VM): the idle
 * limit counts again from now, and the agent's report goes on deciding after that. Audited as
 * `vm.idle_kept`, so admins can see who keeps idle GPUs. Answers when the idle limit would now
 * release the VM, if the fleet has one and the VM is idle.
 */
export async function keepIdleVm(
  db: Db,
  req: { userId: string; actor: Actor },
): Promise<{ vmId: string; idleReleaseAt: Date | null }> {
  return db.transaction(async (tx) => {
    const [kept] = await tx
      .update(vms)
      .set({ idleKeptAt: sql`now()` })
      .where(and(eq(vms.holderId, req.userId), inArray(vms.state, EXPIRABLE)))
      .returning({ id: vms.id, idleSince: vms.idleSince });
    if (!kept)
      throw new DomainError("NOT_FOUND", "You do not hold a VM, so there is nothing to keep.");
    await audit(
      tx,
      req.actor,
      "vm.idle_kept",
      { kind: "vm", id: kept.id },
      { holderId: req.userId, idleSince: kept.idleSince?.toISOString() ?? null },
    );
    const [vm] = await tx
      .select({ idleReleaseAt: idleReleaseAtSql() })
      .from(vms)
      .innerJoin(fleets, eq(fleets.id, vms.fleetId))
      .where(eq(vms.id, kept.id));
    return { vmId: kept.id, idleReleaseAt: vm?.idleReleaseAt ?? null };
  });
}

/** How long after the fact a researcher is told that their hold was ended for them. */
const NOTICE_WINDOW = "2 hours";

export type EndedHold = {
  reason: "hold_expired" | "idle" | "force_release";
  at: Date;
  vmName: string | null;
  /** The fleet's limit that ended it: the hold limit, or the idle limit; null for an admin's release. */
  limitMinutes: number | null;
};

const ENDED_ACTIONS = {
  "vm.hold_expired": "hold_expired",
  "vm.idle_released": "idle",
  "vm.force_release": "force_release",
} as const satisfies Record<string, EndedHold["reason"]>;

/**
 * Why the researcher's last VM went away, when it was not their doing: the hold limit, the idle
 * limit or an admin's force release, in the last two hours and with no claim of theirs since. My
 * VM shows it, so a researcher whose VM vanished is told why instead of finding an empty page.
 */
export async function lastEndedHold(db: DbOrTx, userId: string): Promise<EndedHold | null> {
  const rows = await db.execute<{
    action: keyof typeof ENDED_ACTIONS;
    at: Date | string;
    vm_name: string | null;
    limit_minutes: string | number | null;
  }>(sql`
    SELECT e.action, e.at, v.name AS vm_name,
      coalesce(e.details->>'maxHoldMinutes', e.details->>'idleReleaseMinutes') AS limit_minutes
    FROM ${auditEvents} e
    LEFT JOIN ${vms} v ON v.id::text = e.target_id
    WHERE e.action IN (${sql.join(
      Object.keys(ENDED_ACTIONS).map((a) => sql`${a}`),
      sql`, `,
    )})
      AND e.at > now() - ${NOTICE_WINDOW}::interval
      AND e.details->>'holderId' = ${userId}
      AND NOT EXISTS (
        SELECT 1 FROM ${auditEvents} c
        WHERE c.action = 'vm.claim' AND c.actor_id = ${userId} AND c.at > e.at
      )
    ORDER BY e.at DESC
    LIMIT 1`);
  const row = rows[0];
  if (!row) return null;
  return {
    reason: ENDED_ACTIONS[row.action],
    at: new Date(row.at),
    vmName: row.vm_name,
    limitMinutes: row.limit_minutes === null ? null : Number(row.limit_minutes),
  };
}

/** The two per-fleet limits on a hold, by the column that keeps each and its audit action. */
const LIMITS = {
  hold: { key: "maxHoldMinutes", action: "fleet.hold_limit", endsAt: holdEndsAt },
  idle: { key: "idleReleaseMinutes", action: "fleet.idle_limit", endsAt: idleEndsAt },
  /** GPU-hours per researcher in any 7 days: checked at each claim, ends no current hold. */
  quota: { key: "gpuHoursPerWeek", action: "fleet.quota", endsAt: null },
} as const;
export type FleetLimit = keyof typeof LIMITS;

export type LimitChange = {
  fleetId: string;
  /** Minutes for the hold and idle limits, GPU-hours for the quota; null: none. */
  value: number | null;
  /** Current holds already past the new limit: the next sweep (within 30 s) ends them. */
  holdsPastLimit: number;
};

/**
 * Sets one of a fleet's limits (null: none) with an audit row saying from what to what, in one
 * transaction: the hold limit (`fleet.hold_limit`), the idle limit (`fleet.idle_limit`) or the
 * weekly GPU-hour quota (`fleet.quota`, which only later claims check). The
 * limit applies to current holds as well, the same way the sweep always reads it; the answer says
 * how many holds are already past it, so the admin knows who is about to lose their VM. A
 * destroyed fleet cannot be changed.
 */
export async function setFleetLimit(
  db: Db,
  fleetId: string,
  limit: FleetLimit,
  value: number | null,
  actor: Actor,
): Promise<LimitChange> {
  const { key, action, endsAt } = LIMITS[limit];
  return db.transaction(async (tx) => {
    const fleet = await liveFleet(tx, fleetId, { forUpdate: true });
    await tx
      .update(fleets)
      .set({ [key]: value, updatedAt: sql`now()` })
      .where(eq(fleets.id, fleetId));
    await audit(tx, actor, action, { kind: "fleet", id: fleetId }, { from: fleet[key], to: value });
    let holdsPastLimit = 0;
    if (value !== null && endsAt) {
      const [row] = await tx
        .select({ n: sql<number>`count(*)::int` })
        .from(vms)
        .where(
          and(
            eq(vms.fleetId, fleetId),
            held(),
            limit === "idle" ? reportedIdle() : undefined,
            sql`${endsAt(value)} <= now()`,
          ),
        );
      holdsPastLimit = row?.n ?? 0;
    }
    return { fleetId, value, holdsPastLimit };
  });
}
