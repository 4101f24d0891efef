import {
  and,
  asc,
  count,
  desc,
  eq,
  ilike,
  inArray,
  isNotNull,
  isNull,
  ne,
  or,
  type SQL,
  sql,
} from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import {
  enrollmentTokens,
  type Fleet,
  fleetRecurringSchedules,
  fleetSchedules,
  fleets,
  users,
  type VmState,
  vmRecoveries,
  vms,
} from "../db/schema";
import { recoveryPolicyOf } from "./recovery-policy";
import { nextBoundary } from "./recurring-schedules";
import { warmPoolPolicyOf, warmPoolStateOf } from "./warm-pool";

/** The soonest scheduled change of a fleet: a one-off size or destruction, or a recurring slot's. */
export type NextChange = {
  at: Date;
  kind: "size" | "ready" | "destroy";
  size: number;
  source: "once" | "recurring";
};

async function nextChanges(db: DbOrTx, now: Date) {
  const [once, recurring] = await Promise.all([
    db
      .select({
        fleetId: fleetSchedules.fleetId,
        at: fleetSchedules.at,
        size: fleetSchedules.size,
        kind: fleetSchedules.kind,
      })
      .from(fleetSchedules)
      .where(eq(fleetSchedules.status, "pending"))
      .orderBy(asc(fleetSchedules.at)),
    db.select().from(fleetRecurringSchedules),
  ]);
  const soonest = new Map<
    string,
    { at: Date; size: number; destroy: boolean; source: "once" | "recurring" }
  >();
  const offer = (
    fleetId: string,
    c: { at: Date; size: number; destroy: boolean; source: "once" | "recurring" },
  ) => {
    const seen = soonest.get(fleetId);
    if (!seen || c.at < seen.at) soonest.set(fleetId, c);
  };
  for (const s of once)
    offer(s.fleetId, { at: s.at, size: s.size, destroy: s.kind === "destroy", source: "once" });
  for (const r of recurring) {
    const next = nextBoundary(r, now);
    if (next) offer(r.fleetId, { ...next, destroy: false, source: "recurring" });
  }
  return soonest;
}

/** Fleets with their VM counts per state, warm pool and next scheduled change. */
export async function listFleets(db: DbOrTx, now = new Date()) {
  const rows = await db
    .select()
    .from(fleets)
    .where(ne(fleets.status, "destroyed"))
    .orderBy(fleets.name);
  const counts = await db
    .select({ fleetId: vms.fleetId, state: vms.state, n: count() })
    .from(vms)
    .where(ne(vms.state, "terminated"))
    .groupBy(vms.fleetId, vms.state);
  // Bring-your-own fleets: enrollment uses still open (machines that may still join).
  const open = await db
    .select({
      fleetId: enrollmentTokens.fleetId,
      n: sql<number>`coalesce(sum(${enrollmentTokens.maxUses} - ${enrollmentTokens.uses}), 0)::int`,
    })
    .from(enrollmentTokens)
    .innerJoin(fleets, eq(fleets.id, enrollmentTokens.fleetId))
    .where(
      and(
        eq(fleets.driver, "byo"),
        isNull(enrollmentTokens.revokedAt),
        sql`${enrollmentTokens.expiresAt} > now()`,
        sql`${enrollmentTokens.uses} < ${enrollmentTokens.maxUses}`,
      ),
    )
    .groupBy(enrollmentTokens.fleetId);
  const recovering = await db
    .select({ fleetId: vms.fleetId, n: count() })
    .from(vmRecoveries)
    .innerJoin(vms, eq(vms.id, vmRecoveries.vmId))
    .where(ne(vms.state, "terminated"))
    .groupBy(vms.fleetId);
  // VMs whose startup script failed (failed by policy fail, or let through by continue): the
  // fleet card says so, so an admin does not have to open every VM to find a broken script.
  const issues = await db
    .select({ fleetId: vms.fleetId, n: count() })
    .from(vms)
    .where(and(ne(vms.state, "terminated"), isNotNull(vms.startupIssue)))
    .groupBy(vms.fleetId);
  const next = await nextChanges(db, now);
  return rows.map(({ warmPoolState, ...f }) => {
    const warmPool = warmPoolPolicyOf(f.warmPool);
    const state = warmPool ? warmPoolStateOf(warmPoolState) : null;
    const n = next.get(f.id);
    const nextChange: NextChange | null = n
      ? {
          at: n.at,
          size: n.size,
          source: n.source,
          kind: n.destroy ? "destroy" : warmPool ? "ready" : "size",
        }
      : null;
    return {
      ...f,
      openEnrollments: open.find((o) => o.fleetId === f.id)?.n ?? 0,
      /** The effective automatic-recovery policy (defaults filled in). */
      recovery: recoveryPolicyOf(f.recoveryPolicy),
      /** VMs automatic recovery is working on now. */
      recovering: recovering.find((r) => r.fleetId === f.id)?.n ?? 0,
      startupIssues: issues.find((i) => i.fleetId === f.id)?.n ?? 0,
      warmPool,
      /** Why the warm-pool fleet is not at its size, as the reconciler last saw it. */
      warmPoolStatus: state && {
        status: warmPool?.paused ? ("paused" as const) : state.status,
        reason: warmPool?.paused
          ? warmPool.pausedReason
            ? `Paused: ${warmPool.pausedReason}`
            : "Paused by an admin."
          : state.reason,
        retryAt: state.retryAt ? new Date(state.retryAt) : null,
        consecutiveFailures: state.consecutiveFailures,
        targetSize: state.targetSize,
        checkedAt: state.checkedAt ? new Date(state.checkedAt) : null,
      },
      nextChange,
      vmCounts: Object.fromEntries(
        counts.filter((c) => c.fleetId === f.id).map((c) => [c.state, c.n]),
      ) as Partial<Record<VmState, number>>,
    };
  });
}

export type VmListQuery = {
  fleetId?: string;
  states?: VmState[];
  healthy?: boolean;
  /** true: held by a researcher; false: no holder. */
  held?: boolean;
  /** true: its agent reports it idle (with `held`: held VMs nobody uses, candidates to reclaim). */
  idle?: boolean;
  search?: string;
  includeTerminated?: boolean;
  sort?: "name" | "state" | "lastHeartbeat" | "stateChanged";
  order?: "asc" | "desc";
  limit: number;
  offset: number;
};

/** Admin VM table: server-side filtering, sorting and pagination. */
export async function listVms(db: DbOrTx, q: VmListQuery) {
  const conds: SQL[] = [];
  if (q.fleetId) conds.push(eq(vms.fleetId, q.fleetId));
  if (q.states?.length) conds.push(inArray(vms.state, q.states));
  else if (!q.includeTerminated) conds.push(ne(vms.state, "terminated"));
  if (q.healthy !== undefined) conds.push(eq(vms.healthy, q.healthy));
  if (q.held !== undefined) conds.push(q.held ? isNotNull(vms.holderId) : isNull(vms.holderId));
  if (q.idle !== undefined) conds.push(q.idle ? isNotNull(vms.idleSince) : isNull(vms.idleSince));
  if (q.search) {
    const pattern = `%${q.search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    conds.push(
      or(ilike(vms.name, pattern), ilike(users.email, pattern), ilike(users.name, pattern)) as SQL,
    );
  }
  const where = conds.length ? and(...conds) : undefined;
  const sortCol = {
    name: vms.name,
    state: vms.state,
    lastHeartbeat: vms.lastHeartbeatAt,
    stateChanged: vms.stateChangedAt,
  }[q.sort ?? "name"];
  const dir = q.order === "desc" ? desc : asc;

  const [rows, [total]] = await Promise.all([
    db
      .select({
        id: vms.id,
        name: vms.name,
        state: vms.state,
        healthy: vms.healthy,
        healthReasons: vms.healthReasons,
        /** The startup script's failure or warning (admins only). */
        startupIssue: vms.startupIssue,
        gpus: vms.gpus,
        inUse: vms.inUse,
        idleSince: vms.idleSince,
        lastHeartbeatAt: vms.lastHeartbeatAt,
        stateChangedAt: vms.stateChangedAt,
        claimedAt: vms.claimedAt,
        agentVersion: vms.agentVersion,
        hostname: vms.hostname,
        providerId: vms.providerId,
        fleet: { id: fleets.id, name: fleets.name },
        holder: { id: users.id, name: users.name, email: users.email },
      })
      .from(vms)
      .innerJoin(fleets, eq(fleets.id, vms.fleetId))
      .leftJoin(users, eq(users.id, vms.holderId))
      .where(where)
      .orderBy(dir(sortCol), asc(vms.id))
      .limit(q.limit)
      .offset(q.offset),
    db
      .select({ n: count() })
      .from(vms)
      .innerJoin(fleets, eq(fleets.id, vms.fleetId))
      .leftJoin(users, eq(users.id, vms.holderId))
      .where(where),
  ]);
  return {
    rows: rows.map((r) => ({ ...r, holder: r.holder?.id ? r.holder : null })),
    total: total?.n ?? 0,
  };
}

export type NewFleet = Pick<Fleet, "name" | "driver" | "instanceType"> &
  Partial<
    Pick<Fleet, "gpuModel" | "gpuCount" | "region" | "image" | "desiredSize" | "config" | "status">
  >;

/** Creates the fleet if no live fleet of that name exists; returns it either way. */
export async function ensureFleet(db: DbOrTx, fleet: NewFleet): Promise<Fleet> {
  const [existing] = await db.select().from(fleets).where(eq(fleets.name, fleet.name));
  if (existing) {
    if (existing.desiredSize !== fleet.desiredSize && fleet.desiredSize !== undefined) {
      const [updated] = await db
        .update(fleets)
        .set({ desiredSize: fleet.desiredSize, updatedAt: sql`now()` })
        .where(eq(fleets.id, existing.id))
        .returning();
      return updated as Fleet;
    }
    return existing;
  }
  const [created] = await db.insert(fleets).values(fleet).returning();
  return created as Fleet;
}

export async function getFleet(db: DbOrTx, fleetId: string): Promise<Fleet | null> {
  const [f] = await db.select().from(fleets).where(eq(fleets.id, fleetId));
  return f ?? null;
}

/** The size the fleet's convergence aims at (an admin's scale, a schedule, fleet creation). */
export async function setFleetDesiredSize(
  db: DbOrTx,
  fleetId: string,
  size: number,
): Promise<Fleet | null> {
  const [fleet] = await db
    .update(fleets)
    .set({ desiredSize: size, updatedAt: sql`now()` })
    .where(eq(fleets.id, fleetId))
    .returning();
  return fleet ?? null;
}

/** After its driver ran: `active`, or `destroyed` with nothing left to aim at (size 0). */
export async function setFleetStatus(
  db: DbOrTx,
  fleetId: string,
  status: "active" | "destroyed",
): Promise<void> {
  await db
    .update(fleets)
    .set({ status, ...(status === "destroyed" ? { desiredSize: 0 } : {}), updatedAt: sql`now()` })
    .where(eq(fleets.id, fleetId));
}
