import { and, asc, eq, ne } from "drizzle-orm";
import { issueAgentToken } from "../auth/agent-tokens";
import type { Db, DbOrTx } from "../db/client";
import type { Fleet, Vm } from "../db/schema";
import { vms } from "../db/schema";
import { systemActor, transition } from "./vm-state";

/**
 * Fleet convergence: the fleet's desired state and its rows (and, where a driver can see them,
 * its running machines) → which rows to create, which to retire, which to launch. The drivers
 * (server/cloud/) only launch, terminate, reboot and describe machines; they reach the database
 * through the FleetLedger below, so every row, token and state change is decided here.
 */

/** What a driver sees running (its describe()); only the VM ids matter here. */
export type ObservedMachine = { vmId?: string; running: boolean };

/**
 * The size convergence aims at. Today the fleet's desired size; the warm pool (issue 11 §4)
 * changes this one function.
 */
export function targetSize(fleet: Pick<Fleet, "desiredSize">, _rows: readonly Vm[]): number {
  return fleet.desiredSize;
}

export type ConvergeOptions = {
  /** terminateVm: only this VM leaves; nothing is created and no other VM is retired. */
  removeVmId?: string | null;
  /** The driver's describe(): kept VMs without a running machine are in `launch`. */
  observed?: readonly ObservedMachine[];
};

export type ConvergenceDecision = {
  /** New rows, named <fleet>-<n>, filling gaps first. */
  create: string[];
  /** Rows to move to terminating now: scale-down victims, unheld first, newest first. */
  retire: Vm[];
};

/**
 * The pure half: what to create and retire. Failed VMs neither count towards the size nor give
 * up their name (their machine may still exist, and names are unique among live rows).
 */
export function decideConvergence(
  fleet: Pick<Fleet, "name" | "desiredSize">,
  rows: readonly Vm[],
  opts: Pick<ConvergeOptions, "removeVmId"> = {},
): ConvergenceDecision {
  const live = rows.filter((v) => v.state !== "terminated");
  if (opts.removeVmId) {
    const vm = live.find((v) => v.id === opts.removeVmId && v.state !== "terminating");
    return { create: [], retire: vm ? [vm] : [] };
  }
  const counted = live.filter((v) => v.state !== "terminating" && v.state !== "failed");
  const excess = counted.length - targetSize(fleet, rows);
  const create: string[] = [];
  if (excess < 0) {
    const taken = new Set(live.map((v) => v.name));
    for (let i = 1; create.length < -excess; i++) {
      const name = `${fleet.name}-${i}`;
      if (!taken.has(name)) create.push(name);
    }
  }
  const retire =
    excess > 0
      ? [...counted]
          .sort(
            (a, b) => Number(!!a.holderId) - Number(!!b.holderId) || b.name.localeCompare(a.name),
          )
          .slice(0, excess)
      : [];
  return { create, retire };
}

export type ConvergencePlan = {
  /** VMs that stay in the fleet (failed ones included: their machine is not touched). */
  keep: Vm[];
  /** VMs in `terminating`: this run's victims and any an earlier, interrupted run left. */
  leaving: Vm[];
  /** Kept, not failed, and not running according to the driver's describe(). */
  launch: Vm[];
  created: string[];
};

/** Rows of a fleet that are not terminated, oldest first. */
export function fleetRows(db: Db, fleetId: string): Promise<Vm[]> {
  return db
    .select()
    .from(vms)
    .where(and(eq(vms.fleetId, fleetId), ne(vms.state, "terminated")))
    .orderBy(asc(vms.createdAt), asc(vms.name));
}

/** Applies decideConvergence: inserts the new rows and moves the victims to terminating. */
export async function convergeFleet(
  db: Db,
  fleet: Fleet,
  opts: ConvergeOptions = {},
): Promise<ConvergencePlan> {
  const decision = decideConvergence(fleet, await fleetRows(db, fleet.id), opts);
  if (decision.create.length > 0) {
    await db
      .insert(vms)
      .values(
        decision.create.map((name) => ({
          fleetId: fleet.id,
          name,
          state: "provisioning" as const,
        })),
      )
      .onConflictDoNothing();
  }
  for (const vm of decision.retire) await vmTerminating(db, vm.id);
  const rows = await fleetRows(db, fleet.id);
  const keep = rows.filter((v) => v.state !== "terminating");
  const running = new Set(
    (opts.observed ?? []).filter((m) => m.running && m.vmId).map((m) => m.vmId),
  );
  return {
    keep,
    leaving: rows.filter((v) => v.state === "terminating"),
    launch: keep.filter((v) => v.state !== "failed" && !running.has(v.id)),
    created: decision.create,
  };
}

/** What a driver saw after launching a machine for a VM row. */
export type LaunchObservation = {
  providerId: string;
  privateIp?: string | null;
  publicIp?: string | null;
};

/**
 * Records a launched machine: a provisioning VM starts booting with its provider id; a VM that
 * was already past provisioning (an agent restarted) only gets its new id and addresses.
 */
export async function vmLaunched(
  db: Db,
  vmId: string,
  seen: LaunchObservation,
  details?: Record<string, unknown>,
): Promise<"booting" | "updated" | "unchanged"> {
  const [vm] = await db.select().from(vms).where(eq(vms.id, vmId));
  if (!vm) return "unchanged";
  const patch = {
    providerId: seen.providerId,
    ...(seen.privateIp !== undefined ? { privateIp: seen.privateIp } : {}),
    ...(seen.publicIp !== undefined ? { publicIp: seen.publicIp } : {}),
  };
  if (
    vm.providerId === patch.providerId &&
    (patch.privateIp === undefined || vm.privateIp === patch.privateIp) &&
    (patch.publicIp === undefined || vm.publicIp === patch.publicIp)
  )
    return "unchanged";
  if (vm.state === "provisioning") {
    await transition(db, {
      vmId,
      from: "provisioning",
      to: "booting",
      actor: systemActor,
      action: "driver.boot",
      patch: { providerId: patch.providerId },
      ...(details ? { details } : {}),
    });
  }
  await db.update(vms).set(patch).where(eq(vms.id, vmId));
  return vm.state === "provisioning" ? "booting" : "updated";
}

/** Moves a VM to terminating unless it is already on its way out (a retried run). */
export async function vmTerminating(db: Db, vmId: string): Promise<void> {
  const [vm] = await db.select({ state: vms.state }).from(vms).where(eq(vms.id, vmId));
  if (!vm || vm.state === "terminated" || vm.state === "terminating") return;
  await transition(db, { vmId, to: "terminating", actor: systemActor, action: "driver.terminate" });
}

/** The machine is gone: terminating → terminated (which also revokes the VM's agent tokens). */
export async function vmTerminated(db: Db, vmId: string): Promise<void> {
  const [vm] = await db.select({ state: vms.state }).from(vms).where(eq(vms.id, vmId));
  if (!vm || vm.state === "terminated") return;
  await transition(db, {
    vmId,
    from: "terminating",
    to: "terminated",
    actor: systemActor,
    action: "driver.terminate",
  });
}

/**
 * The port the drivers get instead of the database: reads of the fleet's rows and the domain's
 * decisions and state changes, bound to one database.
 */
export type FleetLedger = {
  rows(fleetId: string): Promise<Vm[]>;
  converge(fleet: Fleet, opts?: ConvergeOptions): Promise<ConvergencePlan>;
  /**
   * A token for the agent of a machine about to launch. By default it retires the VM's other
   * tokens; `keepOthers` leaves them valid for an instance a killed run may still be creating
   * with an earlier token (the first token used retires the rest, server/auth/agent-tokens.ts).
   */
  launchToken(vmId: string, opts?: { keepOthers?: boolean }): Promise<string>;
  /** Records a launched machine; "booting" when this moved the VM out of provisioning. */
  launched(
    vmId: string,
    seen: LaunchObservation,
    details?: Record<string, unknown>,
  ): Promise<"booting" | "updated" | "unchanged">;
  terminating(vmId: string): Promise<void>;
  terminated(vmId: string): Promise<void>;
  /** The driver is about to restart the VM's machine or agent. */
  /** To rebooting; a VM already rebooting (recovery's cold reboot of a stuck one) stays as it is. */
  rebooting(vmId: string): Promise<Vm>;
  /** The VM's row now (null when gone). */
  vm(vmId: string): Promise<Vm | null>;
};

export function fleetLedger(db: Db): FleetLedger {
  return {
    rows: (fleetId) => fleetRows(db, fleetId),
    converge: (fleet, opts) => convergeFleet(db, fleet, opts),
    launchToken: (vmId, opts) =>
      issueAgentToken(db, vmId, opts?.keepOthers ? { keepOthers: true } : {}),
    launched: (vmId, seen, details) => vmLaunched(db, vmId, seen, details),
    terminating: (vmId) => vmTerminating(db, vmId),
    terminated: (vmId) => vmTerminated(db, vmId),
    rebooting: async (vmId) => {
      const [current] = await db.select().from(vms).where(eq(vms.id, vmId));
      if (current?.state === "rebooting") return current;
      return transition(db, { vmId, to: "rebooting", actor: systemActor, action: "driver.reboot" });
    },
    vm: async (vmId) => (await db.select().from(vms).where(eq(vms.id, vmId)))[0] ?? null,
  };
}

const slug = (s: string) =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 48) || "machine";

/**
 * The VM row and first agent token of a bring-your-own machine that enrolled itself: named after
 * its host name (with -2, -3… when taken), already running, so it starts in provisioning with
 * `byo:<name>` as its provider id and its agent's register moves it on.
 */
export async function createEnrolledVm(
  db: DbOrTx,
  req: { fleetId: string; hostname: string },
): Promise<{ vm: { id: string; name: string }; token: string }> {
  const base = slug(req.hostname);
  const taken = await db
    .select({ name: vms.name })
    .from(vms)
    .where(and(eq(vms.fleetId, req.fleetId), ne(vms.state, "terminated")));
  const names = new Set(taken.map((t) => t.name));
  let name = base;
  for (let i = 2; names.has(name); i++) name = `${base}-${i}`;
  const [vm] = await db
    .insert(vms)
    .values({ fleetId: req.fleetId, name, state: "provisioning", providerId: `byo:${name}` })
    .returning({ id: vms.id, name: vms.name });
  if (!vm) throw new Error("VM insert returned nothing");
  return { vm, token: await issueAgentToken(db, vm.id) };
}
