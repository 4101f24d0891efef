import { and, eq, inArray, isNotNull, sql } from "drizzle-orm";
import type { Db, DbOrTx } from "../db/client";
import { auditEvents, crdHandoffs, fleets, vms } from "../db/schema";
import { audit } from "./audit";
import { DomainError } from "./errors";
import { type Actor, systemActor, transition } from "./vm-state";

/** States in which a hold can expire: the researcher has the VM (a rebooting VM waits until it is back). */
const EXPIRABLE = ["claimed", "draining"] as const;

export type ExpiredHold = { vmId: string; holderId: string; maxHoldMinutes: number };

/**
 * Releases every VM held past its fleet's hold limit (`fleets.max_hold_minutes`) through the
 * normal release transition (`releasing`: the agent wipes, then the VM returns to the pool), with
 * a `vm.hold_expired` audit row. Each VM is re-checked under a row lock in its own transaction, so
 * a researcher who released meanwhile, or a VM claimed again by someone else, is left alone.
 * Idempotent: a second run finds nothing left to release.
 */
export async function releaseExpiredHolds(db: Db): Promise<ExpiredHold[]> {
  const expiredWhere = and(
    inArray(vms.state, EXPIRABLE),
    isNotNull(vms.holderId),
    isNotNull(fleets.maxHoldMinutes),
    sql`${vms.claimedAt} + make_interval(mins => ${fleets.maxHoldMinutes}) <= now()`,
  );
  const candidates = await db
    .select({ id: vms.id })
    .from(vms)
    .innerJoin(fleets, eq(fleets.id, vms.fleetId))
    .where(expiredWhere);

  const released: ExpiredHold[] = [];
  for (const { id } of candidates) {
    const done = await db.transaction(async (tx) => {
      // Lock the VM and check again: the hold may have ended since the scan.
      const [vm] = await tx
        .select({
          holderId: vms.holderId,
          state: vms.state,
          claimedAt: vms.claimedAt,
          maxHoldMinutes: fleets.maxHoldMinutes,
        })
        .from(vms)
        .innerJoin(fleets, eq(fleets.id, vms.fleetId))
        .where(and(eq(vms.id, id), expiredWhere))
        .for("update", { of: vms });
      if (!vm?.holderId || vm.maxHoldMinutes === null) return null;
      try {
        await transition(tx, {
          vmId: id,
          from: EXPIRABLE,
          to: "releasing",
          actor: systemActor,
          action: "vm.hold_expired",
          patch: { releasedAt: new Date() },
          details: {
            holderId: vm.holderId,
            maxHoldMinutes: vm.maxHoldMinutes,
            claimedAt: vm.claimedAt?.toISOString() ?? null,
          },
        });
      } catch (e) {
        if (e instanceof DomainError && e.code === "STATE_CONFLICT") return null;
        throw e;
      }
      // As in a researcher's release: no remote-desktop code outlives its assignment.
      await tx.delete(crdHandoffs).where(eq(crdHandoffs.vmId, id));
      return { vmId: id, holderId: vm.holderId, maxHoldMinutes: vm.maxHoldMinutes };
    });
    if (done) released.push(done);
  }
  return released;
}

/** How long after the fact a researcher is told that their hold was ended for them. */
const NOTICE_WINDOW = "2 hours";

export type EndedHold = {
  reason: "hold_expired" | "force_release";
  at: Date;
  vmName: string | null;
  maxHoldMinutes: number | null;
};

/**
 * Why the researcher's last VM went away, when it was not their doing: the hold limit, or an
 * admin's force release, in the last two hours and with no claim of theirs since. My VM shows it,
 * so a researcher whose VM vanished is told why instead of finding an empty page.
 */
export async function lastEndedHold(db: DbOrTx, userId: string): Promise<EndedHold | null> {
  const rows = await db.execute<{
    action: string;
    at: Date | string;
    vm_name: string | null;
    max_hold_minutes: string | number | null;
  }>(sql`
    SELECT e.action, e.at, v.name AS vm_name, e.details->>'maxHoldMinutes' AS max_hold_minutes
    FROM ${auditEvents} e
    LEFT JOIN ${vms} v ON v.id::text = e.target_id
    WHERE e.action IN ('vm.hold_expired', 'vm.force_release')
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
    reason: row.action === "vm.hold_expired" ? "hold_expired" : "force_release",
    at: new Date(row.at),
    vmName: row.vm_name,
    maxHoldMinutes: row.max_hold_minutes === null ? null : Number(row.max_hold_minutes),
  };
}

export type HoldLimitChange = {
  fleetId: string;
  maxHoldMinutes: number | null;
  /** Current holds already longer than the new limit: the next sweep (within 30 s) ends them. */
  holdsPastLimit: number;
};

/**
 * Sets a fleet's hold limit (null: none), with a `fleet.hold_limit` audit row saying from what to
 * what, in one transaction. The limit applies to current holds as well, the same way the sweep
 * always reads it; the answer says how many holds are already past it, so the admin knows who is
 * about to lose their VM. A destroyed fleet cannot be changed.
 */
export async function setHoldLimit(
  db: Db,
  fleetId: string,
  maxHoldMinutes: number | null,
  actor: Actor,
): Promise<HoldLimitChange> {
  return db.transaction(async (tx) => {
    const [fleet] = await tx
      .select({ name: fleets.name, status: fleets.status, maxHoldMinutes: fleets.maxHoldMinutes })
      .from(fleets)
      .where(eq(fleets.id, fleetId))
      .for("update");
    if (!fleet) throw new DomainError("NOT_FOUND", "No such fleet.", { fleetId });
    if (fleet.status === "destroyed" || fleet.status === "destroying") {
      throw new DomainError("STATE_CONFLICT", `Fleet ${fleet.name} is ${fleet.status}.`, {
        status: fleet.status,
      });
    }
    await tx
      .update(fleets)
      .set({ maxHoldMinutes, updatedAt: sql`now()` })
      .where(eq(fleets.id, fleetId));
    await audit(
      tx,
      actor,
      "fleet.hold_limit",
      { kind: "fleet", id: fleetId },
      { from: fleet.maxHoldMinutes, to: maxHoldMinutes },
    );
    let holdsPastLimit = 0;
    if (maxHoldMinutes !== null) {
      const [row] = await tx
        .select({ n: sql<number>`count(*)::int` })
        .from(vms)
        .where(
          and(
            eq(vms.fleetId, fleetId),
            inArray(vms.state, EXPIRABLE),
            isNotNull(vms.holderId),
            sql`${vms.claimedAt} + make_interval(mins => ${maxHoldMinutes}) <= now()`,
          ),
        );
      holdsPastLimit = row?.n ?? 0;
    }
    return { fleetId, maxHoldMinutes, holdsPastLimit };
  });
}
