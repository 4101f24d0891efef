import { and, eq, inArray, sql } from "drizzle-orm";
import type { Db, DbOrTx } from "../db/client";
import { isUniqueViolation } from "../db/errors";
import { type FleetDriverName, fleets, vms } from "../db/schema";
import { removeByoMachine } from "./byo";
import { DomainError } from "./errors";
import { setFleetGroups } from "./groups";
import { liveFleet } from "./live-fleet";
import { requestOperation } from "./operations";
import type { Actor } from "./vm-state";

/**
 * Admin requests that become operations. Each writes the fleet change and the queued operation
 * in one transaction: when the fleet is busy, neither is written.
 */

export type FleetSpec = {
  name: string;
  driver: FleetDriverName;
  instanceType: string;
  gpuModel?: string | null;
  gpuCount: number;
  region?: string | null;
  image?: string | null;
  size: number;
  /** How long a researcher may hold one of its VMs; null or absent: no limit. */
  maxHoldMinutes?: number | null;
  /** How long a held VM may stay idle before it is released; null or absent: no limit. */
  idleReleaseMinutes?: number | null;
  /** GPU-hours each researcher may use in any 7 days; null or absent: no quota. */
  gpuHoursPerWeek?: number | null;
  /** Groups whose members may claim its VMs; empty: every researcher. */
  groupIds?: string[];
  /** Researchers get sudo and docker; released VMs are then replaced, not wiped. */
  rootForResearchers?: boolean;
  /** The image is an original LabLink client image, served through the original client API. */
  clientImageCompat?: boolean;
  config: Record<string, unknown>;
};

/** What the server is configured with that fleet creation depends on. */
export type ProvisioningSettings = {
  /** LABLINK_AGENT_IMAGE: the agent terraform fleets' VMs run. */
  agentImage?: string;
};

/** A terraform fleet's VMs run the agent image, unless they run an original LabLink client image. */
export function requireAgentImage(
  spec: { driver: string; clientImageCompat?: boolean },
  settings: ProvisioningSettings,
) {
  if (spec.driver !== "terraform" || spec.clientImageCompat || settings.agentImage) return;
  throw new DomainError(
    "NOT_CONFIGURED",
    "Terraform fleets need the agent image: set LABLINK_AGENT_IMAGE on the server and worker " +
      "(built and pushed with scripts/build-images.sh; see docs/deploy-aws.md), then restart them.",
    { setting: "LABLINK_AGENT_IMAGE" },
  );
}

export async function createFleet(
  db: Db,
  spec: FleetSpec,
  actor: Actor,
  settings: ProvisioningSettings,
) {
  requireAgentImage(spec, settings);
  try {
    return await db.transaction(async (tx) => {
      const [fleet] = await tx
        .insert(fleets)
        .values({
          name: spec.name,
          driver: spec.driver,
          instanceType: spec.instanceType,
          gpuModel: spec.gpuModel ?? null,
          gpuCount: spec.gpuCount,
          region: spec.region ?? null,
          image: spec.image ?? null,
          desiredSize: 0,
          maxHoldMinutes: spec.maxHoldMinutes ?? null,
          idleReleaseMinutes: spec.idleReleaseMinutes ?? null,
          gpuHoursPerWeek: spec.gpuHoursPerWeek ?? null,
          rootForResearchers: spec.rootForResearchers ?? false,
          clientImageCompat: spec.clientImageCompat ?? false,
          status: "creating",
          config: spec.config,
        })
        .returning();
      if (!fleet) throw new Error("fleet insert returned nothing");
      // In the same transaction: an unknown group leaves no fleet behind.
      if (spec.groupIds && spec.groupIds.length > 0) {
        await setFleetGroups(tx, { fleetId: fleet.id, groupIds: spec.groupIds, actor });
      }
      const operation = await requestOperation(tx, {
        fleetId: fleet.id,
        kind: "fleet.create",
        params: { size: spec.size },
        actor,
      });
      return { fleet, operation };
    });
  } catch (e) {
    if (isUniqueViolation(e, "fleets_name_unique"))
      throw new DomainError("ALREADY_EXISTS", `A fleet named "${spec.name}" already exists.`);
    throw e;
  }
}

/** Requests a scale operation; `db` may be a transaction (the scheduler's). */
export async function scaleFleet(db: DbOrTx, fleetId: string, size: number, actor: Actor) {
  const fleet = await liveFleet(db, fleetId);
  return db.transaction(async (tx) => {
    const operation = await requestOperation(tx, {
      fleetId,
      kind: "fleet.scale",
      params: { size, from: fleet.desiredSize },
      actor,
    });
    await tx
      .update(fleets)
      .set({ status: "scaling", updatedAt: sql`now()` })
      .where(eq(fleets.id, fleetId));
    return { operation };
  });
}

/** Requests the destroy operation; `db` may be a transaction (a scheduled destruction's). */
export async function destroyFleet(db: DbOrTx, fleetId: string, actor: Actor) {
  await liveFleet(db, fleetId);
  return db.transaction(async (tx) => {
    const operation = await requestOperation(tx, { fleetId, kind: "fleet.destroy", actor });
    await tx
      .update(fleets)
      .set({ status: "destroying", updatedAt: sql`now()` })
      .where(eq(fleets.id, fleetId));
    return { operation };
  });
}

export async function requestVmOperation(
  db: Db,
  vmId: string,
  kind: "vm.reboot" | "vm.terminate",
  actor: Actor,
) {
  const [vm] = await db.select().from(vms).where(eq(vms.id, vmId));
  if (!vm) throw new DomainError("NOT_FOUND", "No such VM.", { vmId });
  if (vm.state === "terminated" || vm.state === "terminating")
    throw new DomainError("STATE_CONFLICT", `VM ${vm.name} is already ${vm.state}.`, {
      state: vm.state,
    });
  const fleet = await liveFleet(db, vm.fleetId);
  if (kind === "vm.reboot" && vm.state === "provisioning" && fleet.driver !== "byo")
    throw new DomainError("STATE_CONFLICT", `VM ${vm.name} is still being provisioned.`, {
      state: vm.state,
    });
  if (fleet.driver === "byo") {
    if (kind === "vm.reboot")
      throw new DomainError(
        "NOT_SUPPORTED",
        `${vm.name} is a bring-your-own machine: LabLink cannot reboot it. Reboot it on the machine itself (its agent registers again when it is back), or terminate it to take it out of the fleet.`,
        { driver: "byo" },
      );
    // No worker is involved: the machine leaves now and its agent is told to stop.
    const removed = await removeByoMachine(db, vm, actor);
    return { operation: null, vm: removed };
  }
  return db.transaction(async (tx) => {
    const operation = await requestOperation(tx, {
      fleetId: vm.fleetId,
      vmId,
      kind,
      params: { vmName: vm.name },
      actor,
    });
    if (kind === "vm.terminate") {
      // The fleet shrinks by one now, so no apply brings a replacement back (or picks another
      // VM to remove) while this one is going away.
      await tx
        .update(fleets)
        .set({ desiredSize: sql`greatest(${fleets.desiredSize} - 1, 0)`, updatedAt: sql`now()` })
        .where(and(eq(fleets.id, vm.fleetId), inArray(fleets.status, ["active", "failed"])));
    }
    return { operation };
  });
}
