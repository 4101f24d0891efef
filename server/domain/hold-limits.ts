import { and, eq, inArray, isNotNull, sql } from "drizzle-orm";
import type { Db } from "../db/client";
import { crdHandoffs, fleets, vms } from "../db/schema";
import { DomainError } from "./errors";
import { systemActor, transition } from "./vm-state";

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
