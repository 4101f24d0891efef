import { and, count, eq, inArray, lt, notInArray, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { isUniqueViolation } from "../db/errors";
import { type Fleet, fleets, type Vm, vms } from "../db/schema";
import { audit } from "./audit";
import { DomainError } from "./errors";
import { setFleetGroups } from "./groups";
import { type Actor, transition } from "./vm-state";

/**
 * Bring-your-own fleets: LabLink creates no machine. A machine joins with an enrollment token and
 * its agent creates its VM row (server/auth/enrollment.ts); the fleet's desired size is how many
 * machines the admin expects, and scaling hands out enrollment tokens for the missing ones. No
 * worker operation is involved: every change here is one transaction the API waits for.
 *
 * A machine leaves by going to `terminating`: its agent's next reply is a `shutdown` command and
 * the agent stops. `finishByoRemovals` then ends it (`terminated`, which revokes its agent
 * tokens) once the agent has had time to hear it.
 */

/** States of a machine that is no longer part of the fleet. */
const LEFT = ["terminating", "terminated"] as const;

export type ByoFleetSpec = {
  name: string;
  instanceType: string;
  gpuModel?: string | null;
  gpuCount: number;
  size: number;
  maxHoldMinutes?: number | null;
  idleReleaseMinutes?: number | null;
  gpuHoursPerWeek?: number | null;
  groupIds?: string[];
  rootForResearchers?: boolean;
};

/** Creates an active byo fleet expecting `size` machines (the caller issues their tokens). */
export async function createByoFleet(db: DbOrTx, spec: ByoFleetSpec, actor: Actor): Promise<Fleet> {
  try {
    return await db.transaction(async (tx) => {
      const [fleet] = await tx
        .insert(fleets)
        .values({
          name: spec.name,
          driver: "byo",
          instanceType: spec.instanceType,
          gpuModel: spec.gpuModel ?? null,
          gpuCount: spec.gpuCount,
          region: "bring your own",
          desiredSize: spec.size,
          maxHoldMinutes: spec.maxHoldMinutes ?? null,
          idleReleaseMinutes: spec.idleReleaseMinutes ?? null,
          gpuHoursPerWeek: spec.gpuHoursPerWeek ?? null,
          rootForResearchers: spec.rootForResearchers ?? false,
          status: "active",
          config: {},
        })
        .returning();
      if (!fleet) throw new Error("fleet insert returned nothing");
      if (spec.groupIds && spec.groupIds.length > 0) {
        await setFleetGroups(tx, { fleetId: fleet.id, groupIds: spec.groupIds, actor });
      }
      await audit(
        tx,
        actor,
        "fleet.create",
        { kind: "fleet", id: fleet.id },
        { driver: "byo", size: spec.size },
      );
      return fleet;
    });
  } catch (e) {
    if (isUniqueViolation(e, "fleets_name_unique"))
      throw new DomainError("ALREADY_EXISTS", `A fleet named "${spec.name}" already exists.`);
    throw e;
  }
}

/** Machines enrolled in the fleet and not leaving it. */
export async function enrolledMachines(db: DbOrTx, fleetId: string): Promise<number> {
  const [row] = await db
    .select({ n: count() })
    .from(vms)
    .where(and(eq(vms.fleetId, fleetId), notInArray(vms.state, [...LEFT])));
  return row?.n ?? 0;
}

/** The fleet, which must be a live byo fleet. */
export async function liveByoFleet(db: DbOrTx, fleetId: string): Promise<Fleet> {
  const [fleet] = await db.select().from(fleets).where(eq(fleets.id, fleetId));
  if (!fleet) throw new DomainError("NOT_FOUND", "No such fleet.", { fleetId });
  if (fleet.status === "destroyed" || fleet.status === "destroying")
    throw new DomainError("STATE_CONFLICT", `Fleet ${fleet.name} is ${fleet.status}.`, {
      status: fleet.status,
    });
  if (fleet.driver !== "byo")
    throw new DomainError("INVALID_INPUT", `Fleet ${fleet.name} is not a bring-your-own fleet.`);
  return fleet;
}

/**
 * Sets how many machines a byo fleet expects. Returns how many are enrolled and how many more
 * are missing (the caller fits the open enrollment tokens to that). Enrolled machines are never
 * removed by a smaller size: the admin removes a machine with vm.terminate.
 */
export async function resizeByoFleet(db: DbOrTx, fleetId: string, size: number, actor: Actor) {
  const fleet = await liveByoFleet(db, fleetId);
  const enrolled = await enrolledMachines(db, fleetId);
  await db
    .update(fleets)
    .set({ desiredSize: size, updatedAt: sql`now()` })
    .where(eq(fleets.id, fleetId));
  await audit(
    db,
    actor,
    "fleet.scale",
    { kind: "fleet", id: fleetId },
    { driver: "byo", from: fleet.desiredSize, to: size, enrolled },
  );
  return {
    fleet: { ...fleet, desiredSize: size },
    enrolled,
    missing: Math.max(size - enrolled, 0),
  };
}

/**
 * Takes one machine out of its byo fleet: it goes to `terminating` (its agent is told to shut
 * down) and the fleet expects one machine fewer, so no new token is handed out for it.
 */
export async function removeByoMachine(db: DbOrTx, vm: Vm, actor: Actor): Promise<Vm> {
  return db.transaction(async (tx) => {
    const moved = await transition(tx, {
      vmId: vm.id,
      to: "terminating",
      actor,
      action: "vm.terminate",
      details: { driver: "byo" },
    });
    await tx
      .update(fleets)
      .set({ desiredSize: sql`greatest(${fleets.desiredSize} - 1, 0)`, updatedAt: sql`now()` })
      .where(eq(fleets.id, vm.fleetId));
    return moved;
  });
}

/**
 * Destroys a byo fleet at once: every machine leaves (its agent is told to stop, its tokens are
 * revoked by `finishByoRemovals`), and the fleet is destroyed. Returns the machines told to stop.
 */
export async function destroyByoFleet(db: DbOrTx, fleetId: string, actor: Actor) {
  const fleet = await liveByoFleet(db, fleetId);
  return db.transaction(async (tx) => {
    const live = await tx
      .select({ id: vms.id })
      .from(vms)
      .where(and(eq(vms.fleetId, fleetId), notInArray(vms.state, [...LEFT])));
    for (const vm of live) {
      await transition(tx, {
        vmId: vm.id,
        to: "terminating",
        actor,
        action: "fleet.destroy",
        details: { driver: "byo", fleetId },
      });
    }
    await tx
      .update(fleets)
      .set({ status: "destroyed", desiredSize: 0, updatedAt: sql`now()` })
      .where(eq(fleets.id, fleetId));
    await audit(
      tx,
      actor,
      "fleet.destroy",
      { kind: "fleet", id: fleetId },
      { driver: "byo", name: fleet.name, machines: live.length },
    );
    return { machines: live.length };
  });
}

/**
 * Ends byo machines that have been leaving for `afterS` seconds: their agents have heard the
 * `shutdown` by then (every reply carries it), so the row becomes `terminated` and its agent
 * tokens are revoked. Run by the worker's silent-agent sweep.
 */
export async function finishByoRemovals(db: DbOrTx, afterS: number, actor: Actor): Promise<number> {
  const leaving = await db
    .select({ id: vms.id })
    .from(vms)
    .innerJoin(fleets, eq(fleets.id, vms.fleetId))
    .where(
      and(
        eq(fleets.driver, "byo"),
        inArray(vms.state, ["terminating"]),
        lt(vms.stateChangedAt, sql`now() - make_interval(secs => ${afterS})`),
      ),
    );
  let done = 0;
  for (const vm of leaving) {
    try {
      await transition(db, {
        vmId: vm.id,
        from: "terminating",
        to: "terminated",
        actor,
        action: "vm.terminated",
        details: { driver: "byo" },
      });
      done++;
    } catch (e) {
      // Another worker's sweep ended it first.
      if (!(e instanceof DomainError && e.code === "STATE_CONFLICT")) throw e;
    }
  }
  return done;
}
