import { and, count, inArray, ne, not, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import {
  type FleetStatus,
  fleets,
  type OperationKind,
  type OperationProgress,
  operations,
  type VmState,
  vms,
} from "../db/schema";
import { fleetAccessible, type Viewer } from "./groups";

export type Capacity = {
  ready: number;
  booting: number;
  inUse: number;
  /** Ready but unhealthy, or failed. */
  unhealthy: number;
  /** Drained by an admin with no researcher on them: out of the pool until undrained. */
  draining: number;
  total: number;
};

const BOOTING: readonly VmState[] = ["provisioning", "booting", "rebooting"];
const IN_USE: readonly VmState[] = ["claimed", "releasing"];

type CountRow = { fleetId: string; state: VmState; healthy: boolean; held: boolean; n: number };

function summarize(rows: CountRow[]): Capacity {
  const c: Capacity = { ready: 0, booting: 0, inUse: 0, unhealthy: 0, draining: 0, total: 0 };
  for (const r of rows) {
    if (r.state === "terminated") continue;
    c.total += r.n;
    // A ready VM is `held` only when set aside for a booking: in use, not free for walk-ins.
    if (r.state === "ready" && r.healthy && !r.held) c.ready += r.n;
    else if (r.state === "ready" && r.healthy) c.inUse += r.n;
    else if (r.state === "ready" || r.state === "failed") c.unhealthy += r.n;
    // A held VM stays in use through a drain or a reboot: it comes back to its researcher.
    else if (IN_USE.includes(r.state) || r.held) c.inUse += r.n;
    else if (BOOTING.includes(r.state)) c.booting += r.n;
    else if (r.state === "draining") c.draining += r.n;
  }
  return c;
}

/** The provisioning operation in flight for a fleet, if any (no logs, no parameters). */
export type PoolOperation = {
  kind: OperationKind;
  status: "queued" | "running";
  progress: OperationProgress | null;
};

/**
 * Why a researcher can or cannot claim from a fleet right now, and when capacity is expected.
 * - available: a ready, healthy VM is free.
 * - booting: none free, some are starting; `etaSeconds` is the fleet's median boot time.
 * - scaling: none free or starting, but a create or scale operation is running.
 * - full: every VM is held by a researcher.
 * - out_of_service: the fleet's VMs are unhealthy or drained by an admin.
 * - empty: the fleet has no VMs and nothing is adding any.
 */
export type Outlook =
  | { kind: "available" }
  | { kind: "booting"; booting: number; etaSeconds: number | null }
  | { kind: "scaling"; operation: PoolOperation }
  | { kind: "full" }
  | { kind: "out_of_service" }
  | { kind: "empty" };

export function outlookOf(
  c: Capacity,
  operation: PoolOperation | null,
  medianBootSeconds: number | null,
): Outlook {
  if (c.ready > 0) return { kind: "available" };
  if (c.booting > 0) return { kind: "booting", booting: c.booting, etaSeconds: medianBootSeconds };
  if (operation && operation.kind !== "fleet.destroy") return { kind: "scaling", operation };
  if (c.total === 0) return { kind: "empty" };
  // Some in use and the rest out of service is "full" too: the researcher waits for a release.
  return c.inUse === 0 ? { kind: "out_of_service" } : { kind: "full" };
}

export type PoolFleet = {
  fleetId: string;
  name: string;
  instanceType: string;
  gpuModel: string | null;
  gpuCount: number;
  status: FleetStatus;
  /** The median time from start to ready of the fleet's recent boots, in seconds. */
  medianBootSeconds: number | null;
  operation: PoolOperation | null;
  outlook: Outlook;
  /**
   * The fleet's weekly GPU-hour quota and how much of it the viewer used in the last 7 days;
   * null without a quota (or without a signed-in viewer).
   */
  quota: { gpuHoursPerWeek: number; usedGpuHours: number } | null;
} & Capacity;

/** How many recent boots a fleet's median is taken over, and how far back they may lie. */
const BOOT_SAMPLE = 25;
const BOOT_WINDOW_DAYS = 14;
/** The median changes slowly and the summary is polled: compute it at most once a minute. */
const BOOT_CACHE_MS = 60_000;
/** No boot recorded yet (a fresh install): look again soon, the first boots are minutes away. */
const EMPTY_BOOT_CACHE_MS = 5_000;

const bootCache = new WeakMap<object, { at: number; medians: Map<string, number> }>();

/**
 * Median boot durations per fleet: from the VM's start (its creation, or the admin's reboot) to
 * the agent's registration that made it ready, over each fleet's last BOOT_SAMPLE boots. Read
 * from the audit log through its time index, cached for a minute per database.
 */
export async function medianBootSeconds(
  db: DbOrTx,
  now = Date.now(),
): Promise<Map<string, number>> {
  const cached = bootCache.get(db);
  const ttl = cached?.medians.size ? BOOT_CACHE_MS : EMPTY_BOOT_CACHE_MS;
  if (cached && now - cached.at < ttl) return cached.medians;
  const rows = await db.execute<{ fleet_id: string; median: number }>(sql`
    WITH boots AS (
      SELECT v.fleet_id, a.at, extract(epoch FROM a.at - coalesce((
          SELECT max(s.at) FROM audit_events s
          WHERE s.target_kind = 'vm' AND s.target_id = a.target_id AND s.at < a.at
            AND s.to_state = 'rebooting'
        ), v.created_at)) AS seconds,
        row_number() OVER (PARTITION BY v.fleet_id ORDER BY a.at DESC) AS rn
      FROM audit_events a
      JOIN vms v ON v.id::text = a.target_id
      WHERE a.at > now() - make_interval(days => ${BOOT_WINDOW_DAYS})
        AND a.target_kind = 'vm' AND a.from_state = 'booting' AND a.to_state IN ('ready', 'claimed')
    )
    SELECT fleet_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)::float8 AS median
    FROM boots WHERE rn <= ${BOOT_SAMPLE} AND seconds >= 0
    GROUP BY fleet_id`);
  const medians = new Map<string, number>();
  for (const r of rows) medians.set(r.fleet_id, Math.round(Number(r.median)));
  bootCache.set(db, { at: now, medians });
  return medians;
}

/** Forgets the cached boot medians (tests, after writing audit rows). */
export function clearBootCache(db: DbOrTx): void {
  bootCache.delete(db);
}

export type PoolSummary = {
  fleets: PoolFleet[];
  totals: Capacity;
  /**
   * Live fleets reserved for groups the signed-in researcher is not in: with no fleet of their
   * own, the portal says so instead of "no fleets yet". Always 0 for anonymous visitors.
   */
  otherGroupsFleets: number;
};

/**
 * Availability per fleet the viewer may claim from (anonymous visitors: the fleets open to every
 * researcher), with why a claim would fail and when capacity is expected. Counts and fleet
 * settings only: safe for anonymous callers. Polled by every open portal: four indexed queries,
 * the boot medians cached.
 */
export async function poolSummary(db: DbOrTx, viewer: Viewer = null): Promise<PoolSummary> {
  const live = inArray(fleets.status, ["active", "scaling", "creating"]);
  const [fleetRows, counts, ops, medians, hidden] = await Promise.all([
    db
      .select({
        fleetId: fleets.id,
        name: fleets.name,
        instanceType: fleets.instanceType,
        gpuModel: fleets.gpuModel,
        gpuCount: fleets.gpuCount,
        status: fleets.status,
        gpuHoursPerWeek: fleets.gpuHoursPerWeek,
        usedGpuHours: viewer
          ? sql<
              number | null
            >`CASE WHEN ${fleets.gpuHoursPerWeek} IS NOT NULL THEN lablink_gpu_hours(${viewer.userId}, ${fleets.id}, now() - interval '7 days') END`
          : sql<number | null>`NULL`,
      })
      .from(fleets)
      .where(and(live, fleetAccessible(fleets.id, viewer)))
      .orderBy(fleets.name),
    db
      .select({
        fleetId: vms.fleetId,
        state: vms.state,
        healthy: vms.healthy,
        held: sql<boolean>`(${vms.holderId} IS NOT NULL OR ${vms.reservedBookingId} IS NOT NULL)`,
        n: count(),
      })
      .from(vms)
      .where(ne(vms.state, "terminated"))
      .groupBy(
        vms.fleetId,
        vms.state,
        vms.healthy,
        sql`(${vms.holderId} IS NOT NULL OR ${vms.reservedBookingId} IS NOT NULL)`,
      ),
    db
      .select({
        fleetId: operations.fleetId,
        kind: operations.kind,
        status: operations.status,
        progress: operations.progress,
      })
      .from(operations)
      .where(inArray(operations.status, ["queued", "running"])),
    medianBootSeconds(db),
    viewer && viewer.role !== "admin"
      ? db
          .select({ n: count() })
          .from(fleets)
          .where(and(live, not(fleetAccessible(fleets.id, viewer))))
          .then((r) => r[0]?.n ?? 0)
      : Promise.resolve(0),
  ]);
  const result = fleetRows.map((f): PoolFleet => {
    const capacity = summarize(counts.filter((c) => c.fleetId === f.fleetId));
    const op = ops.find((o) => o.fleetId === f.fleetId);
    const operation: PoolOperation | null = op
      ? {
          kind: op.kind,
          status: op.status as PoolOperation["status"],
          progress: op.progress ?? null,
        }
      : null;
    const median = medians.get(f.fleetId) ?? null;
    const { gpuHoursPerWeek, usedGpuHours, ...fleet } = f;
    return {
      ...fleet,
      quota:
        gpuHoursPerWeek !== null && usedGpuHours !== null
          ? { gpuHoursPerWeek, usedGpuHours: Math.round(Number(usedGpuHours) * 10) / 10 }
          : null,
      ...capacity,
      medianBootSeconds: median,
      operation,
      outlook: outlookOf(capacity, operation, median),
    };
  });
  const totals = summarize(counts.filter((c) => fleetRows.some((f) => f.fleetId === c.fleetId)));
  return { fleets: result, totals, otherGroupsFleets: hidden };
}
