import { randomUUID } from "node:crypto";
import { eq } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { fleets, type Vm } from "../db/schema";
import { requestOperation } from "./operations";
import { researchAccountName } from "./research-account";

export { researchAccountName };

import { type Actor, systemActor, type TransitionRequest, transition } from "./vm-state";

async function rootForResearchers(db: DbOrTx, fleetId: string): Promise<boolean> {
  const [fleet] = await db
    .select({ root: fleets.rootForResearchers })
    .from(fleets)
    .where(eq(fleets.id, fleetId));
  return fleet?.root ?? false;
}

/** What the assign command tells the agent about the holder's account. */
export async function researchAccountFor(
  db: DbOrTx,
  vm: Pick<Vm, "fleetId">,
  assignmentId: string,
) {
  return {
    name: researchAccountName(assignmentId),
    root: await rootForResearchers(db, vm.fleetId),
  };
}

/**
 * Where a VM goes once its agent is back after a reboot: to its holder if it has one; otherwise
 * through a wipe (`releasing`) before it may be `ready` again, since a failed or rebooted VM may
 * still carry a past holder's traces. With no assignment left to wipe, a fresh id names the wipe.
 */
export function afterReboot(vm: Pick<Vm, "id" | "holderId" | "assignmentId">, actor: Actor) {
  return (
    vm.holderId
      ? { vmId: vm.id, from: "rebooting", to: "claimed", actor, action: "agent.register" }
      : {
          vmId: vm.id,
          from: "rebooting",
          to: "releasing",
          actor,
          action: "agent.register",
          patch: { assignmentId: vm.assignmentId ?? randomUUID() },
          details: { wipeBeforeReady: true },
        }
  ) satisfies TransitionRequest;
}

/**
 * The agent acknowledged a wipe. Normally the VM goes back to the pool (or stays out, if an admin
 * asked to drain it). On a fleet whose researchers have root no wipe can be trusted, so the VM is
 * replaced instead: terminated and a new one created by a `vm.replace` operation, queued in the
 * same transaction. If the fleet is busy with another operation nothing changes and the agent's
 * next acknowledgement tries again.
 */
export async function wipeAcknowledged(
  db: DbOrTx,
  vm: Pick<Vm, "id" | "fleetId" | "name" | "drainRequested">,
  actor: Actor,
): Promise<Vm> {
  if (!(await rootForResearchers(db, vm.fleetId))) {
    return transition(db, {
      vmId: vm.id,
      from: "releasing",
      to: vm.drainRequested ? "draining" : "ready",
      actor,
      action: "vm.wiped",
      patch: { assignmentId: null },
    });
  }
  return replaceReleased(
    db,
    vm,
    actor,
    "root for researchers: released VMs are replaced, not reused",
  );
}

/**
 * A released VM that cannot be trusted clean is terminated and a new one created in its place
 * (a `vm.replace` operation, queued in the same transaction). STATE_CONFLICT when the fleet is
 * busy with another operation: nothing changes, and the caller's next attempt tries again.
 */
export async function replaceReleased(
  db: DbOrTx,
  vm: Pick<Vm, "id" | "fleetId" | "name">,
  actor: Actor,
  reason: string,
): Promise<Vm> {
  return db.transaction(async (tx) => {
    const moved = await transition(tx, {
      vmId: vm.id,
      from: "releasing",
      to: "terminating",
      actor,
      action: "vm.replace",
      patch: { assignmentId: null },
      details: { reason },
    });
    await requestOperation(tx, {
      fleetId: vm.fleetId,
      vmId: vm.id,
      kind: "vm.replace",
      params: { vmName: vm.name },
      actor: systemActor,
    });
    return moved;
  });
}
