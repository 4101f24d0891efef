import { and, count, eq, getTableColumns, inArray, ne, type SQL, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { crdHandoffs, fleets, users, type Vm, type VmState, vms } from "../db/schema";
import { DomainError } from "./errors";
import { type Actor, HOLDER_STATES, transition } from "./vm-state";

/** `RETURNING` list that maps snake_case columns back to the Drizzle row shape. */
const vmReturning = sql.raw(
  Object.entries(getTableColumns(vms))
    .map(([key, col]) => `vms.${col.name} AS "${key}"`)
    .join(", "),
);

type RawVm = Omit<
  Vm,
  "claimedAt" | "releasedAt" | "stateChangedAt" | "lastHeartbeatAt" | "idleSince" | "createdAt"
> &
  Record<
    "claimedAt" | "releasedAt" | "stateChangedAt" | "lastHeartbeatAt" | "idleSince" | "createdAt",
    Date | string | null
  >;

const asDate = (v: Date | string | null) => (v === null || v instanceof Date ? v : new Date(v));

function toVm(row: RawVm): Vm {
  return {
    ...row,
    claimedAt: asDate(row.claimedAt),
    releasedAt: asDate(row.releasedAt),
    stateChangedAt: asDate(row.stateChangedAt) as Date,
    lastHeartbeatAt: asDate(row.lastHeartbeatAt),
    idleSince: asDate(row.idleSince),
    createdAt: asDate(row.createdAt) as Date,
  };
}

export type ClaimRequest = {
  userId: string;
  fleetId?: string;
  instanceType?: string;
  actor: Actor;
};

export type ClaimResult = { vm: Vm; rejoined: boolean };

/** The VM a researcher holds now, if any. */
export async function heldVm(db: DbOrTx, userId: string): Promise<Vm | null> {
  const [vm] = await db
    .select()
    .from(vms)
    .where(and(eq(vms.holderId, userId), inArray(vms.state, HOLDER_STATES)));
  return vm ?? null;
}

function isUniqueViolation(e: unknown, constraint: string): boolean {
  for (
    let err = e as { code?: string; constraint_name?: string; cause?: unknown } | undefined;
    err;
    err = err.cause as typeof err
  ) {
    if (err.code === "23505" && err.constraint_name === constraint) return true;
  }
  return false;
}

/**
 * Claims one ready, healthy VM for a researcher, race-free.
 *
 * One statement picks a row with `FOR UPDATE SKIP LOCKED` (concurrent claimers skip each other's
 * rows instead of queueing on them), flips it to `claimed` and writes the audit row. The partial
 * unique index `vms_one_active_per_holder` guarantees one VM per researcher even when the same
 * person claims from many tabs at once: the losers get the winner's VM back (idempotent rejoin).
 */
export async function claimVm(db: DbOrTx, req: ClaimRequest): Promise<ClaimResult> {
  const existing = await heldVm(db, req.userId);
  if (existing) return { vm: existing, rejoined: true };

  const filters: SQL[] = [sql`v.state = 'ready'`, sql`v.healthy`];
  if (req.fleetId) filters.push(sql`v.fleet_id = ${req.fleetId}`);
  if (req.instanceType) {
    filters.push(
      sql`v.fleet_id IN (SELECT id FROM fleets WHERE instance_type = ${req.instanceType})`,
    );
  }
  filters.push(sql`v.fleet_id IN (SELECT id FROM fleets WHERE status IN ('active', 'scaling'))`);

  try {
    const rows = await db.execute<RawVm>(sql`
      WITH pick AS (
        SELECT v.id FROM vms v
        WHERE ${sql.join(filters, sql` AND `)}
        ORDER BY v.state_changed_at, v.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
      ), claimed AS (
        UPDATE vms SET
          state = 'claimed', holder_id = ${req.userId}, assignment_id = gen_random_uuid(),
          assignment_acked_id = NULL, claimed_at = now(), released_at = NULL,
          state_changed_at = now()
        FROM pick WHERE vms.id = pick.id
        RETURNING ${vmReturning}
      ), audit AS (
        INSERT INTO audit_events
          (actor_kind, actor_id, ip, action, target_kind, target_id, from_state, to_state, details)
        SELECT ${req.actor.kind}, ${req.actor.id}, ${req.actor.ip ?? null}, 'vm.claim', 'vm',
               claimed.id::text, 'ready', 'claimed', '{}'::jsonb
        FROM claimed
      )
      SELECT * FROM claimed`);
    const row = rows[0];
    if (row) return { vm: toVm(row), rejoined: false };
  } catch (e) {
    // Another request of the same researcher won the race: hand back that VM.
    if (isUniqueViolation(e, "vms_one_active_per_holder")) {
      const vm = await heldVm(db, req.userId);
      if (vm) return { vm, rejoined: true };
    }
    throw e;
  }

  const capacity = await capacityFor(db, req);
  throw new DomainError(
    "NO_CAPACITY",
    capacity.total === 0
      ? "There are no GPU VMs in this pool yet. Ask your admin to add some."
      : capacity.booting > 0
        ? `No GPU VM is free right now: ${capacity.ready} ready, ${capacity.booting} starting up. Try again in a few minutes.`
        : `No GPU VM is free right now: all ${capacity.inUse} are in use and none is starting up.`,
    capacity,
  );
}

export type Capacity = {
  ready: number;
  booting: number;
  inUse: number;
  unhealthy: number;
  total: number;
};

async function capacityFor(
  db: DbOrTx,
  req: Pick<ClaimRequest, "fleetId" | "instanceType">,
): Promise<Capacity> {
  const conds: SQL[] = [ne(vms.state, "terminated")];
  if (req.fleetId) conds.push(eq(vms.fleetId, req.fleetId));
  if (req.instanceType) conds.push(eq(fleets.instanceType, req.instanceType));
  const rows = await db
    .select({ state: vms.state, healthy: vms.healthy, n: count() })
    .from(vms)
    .innerJoin(fleets, eq(fleets.id, vms.fleetId))
    .where(and(...conds))
    .groupBy(vms.state, vms.healthy);
  return summarize(rows);
}

const BOOTING: readonly VmState[] = ["provisioning", "booting", "rebooting"];
const IN_USE: readonly VmState[] = ["claimed", "releasing", "draining"];

function summarize(rows: { state: VmState; healthy: boolean; n: number }[]): Capacity {
  const c: Capacity = { ready: 0, booting: 0, inUse: 0, unhealthy: 0, total: 0 };
  for (const r of rows) {
    if (r.state === "terminated") continue;
    c.total += r.n;
    if (r.state === "ready" && r.healthy) c.ready += r.n;
    else if (r.state === "ready" || r.state === "failed") c.unhealthy += r.n;
    else if (BOOTING.includes(r.state)) c.booting += r.n;
    else if (IN_USE.includes(r.state)) c.inUse += r.n;
  }
  return c;
}

export type PoolFleet = {
  fleetId: string;
  name: string;
  instanceType: string;
  gpuModel: string | null;
  gpuCount: number;
} & Capacity;

/** Availability per fleet. Counts only: safe for anonymous callers. */
export async function poolSummary(db: DbOrTx): Promise<{ fleets: PoolFleet[]; totals: Capacity }> {
  const fleetRows = await db
    .select({
      fleetId: fleets.id,
      name: fleets.name,
      instanceType: fleets.instanceType,
      gpuModel: fleets.gpuModel,
      gpuCount: fleets.gpuCount,
    })
    .from(fleets)
    .where(inArray(fleets.status, ["active", "scaling", "creating"]))
    .orderBy(fleets.name);
  const counts = await db
    .select({ fleetId: vms.fleetId, state: vms.state, healthy: vms.healthy, n: count() })
    .from(vms)
    .where(ne(vms.state, "terminated"))
    .groupBy(vms.fleetId, vms.state, vms.healthy);
  const result = fleetRows.map((f) => ({
    ...f,
    ...summarize(counts.filter((c) => c.fleetId === f.fleetId)),
  }));
  const totals = summarize(counts.filter((c) => fleetRows.some((f) => f.fleetId === c.fleetId)));
  return { fleets: result, totals };
}

/**
 * Gives the researcher's VM back: it goes to `releasing`, the agent wipes the researcher's traces
 * and acknowledges, and only then does the VM return to the pool.
 */
export async function releaseVm(db: DbOrTx, req: { userId: string; actor: Actor }): Promise<Vm> {
  const vm = await heldVm(db, req.userId);
  if (!vm)
    throw new DomainError("NOT_FOUND", "You do not hold a VM, so there is nothing to release.");
  return db.transaction(async (tx) => {
    const released = await transition(tx, {
      vmId: vm.id,
      from: ["claimed", "draining"],
      to: "releasing",
      actor: req.actor,
      action: "vm.release",
      patch: { releasedAt: new Date() },
      details: { holderId: req.userId },
    });
    // No remote-desktop code outlives the assignment it was meant for.
    await tx.delete(crdHandoffs).where(eq(crdHandoffs.vmId, vm.id));
    return released;
  });
}

/** The researcher's VM with what the portal shows about it. */
export async function myVm(db: DbOrTx, userId: string) {
  const [row] = await db
    .select({
      id: vms.id,
      name: vms.name,
      state: vms.state,
      healthy: vms.healthy,
      healthReasons: vms.healthReasons,
      gpus: vms.gpus,
      claimedAt: vms.claimedAt,
      lastHeartbeatAt: vms.lastHeartbeatAt,
      hostname: vms.hostname,
      agentReady: sql<boolean>`${vms.assignmentAckedId} IS NOT DISTINCT FROM ${vms.assignmentId} AND ${vms.assignmentId} IS NOT NULL`,
      fleet: {
        id: fleets.id,
        name: fleets.name,
        instanceType: fleets.instanceType,
        gpuModel: fleets.gpuModel,
      },
    })
    .from(vms)
    .innerJoin(fleets, eq(fleets.id, vms.fleetId))
    .where(and(eq(vms.holderId, userId), inArray(vms.state, HOLDER_STATES)));
  return row ?? null;
}

/** Display name of a user, for the agent (no email). */
export async function displayNameOf(db: DbOrTx, userId: string): Promise<string> {
  const [u] = await db
    .select({ name: users.name, email: users.email })
    .from(users)
    .where(eq(users.id, userId));
  return u?.name ?? u?.email?.split("@")[0] ?? "researcher";
}
