import { and, eq, getTableColumns, inArray, sql } from "drizzle-orm";
import { type DbOrTx, pgClient } from "../db/client";
import { isUniqueViolation } from "../db/errors";
import {
  crdHandoffs,
  fleets,
  type UserRole,
  users,
  type Vm,
  vmRecoveries,
  vms,
} from "../db/schema";
import { DomainError } from "./errors";
import { extensionOffer, recordClaimRefusal } from "./hold-extensions";
import { idleReleaseAtSql } from "./hold-limits";
import { recoveryPolicyOf } from "./recovery-policy";
import { DEFAULT_SSH_USER, researchAccountName } from "./research-account";
import { type Actor, HOLDER_STATES, transition } from "./vm-state";
import { emitEvent } from "./webhook-events";

/** Select list that maps snake_case columns back to the Drizzle row shape. */
const vmColumns = (table: string) =>
  Object.entries(getTableColumns(vms))
    .map(([key, col]) => `${table}.${col.name} AS "${key}"`)
    .join(", ");

export type ClaimRequest = {
  userId: string;
  /** Admins may claim from group-restricted fleets; researchers only from their groups' fleets. */
  role?: UserRole;
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

// The claim statement goes straight to postgres.js (pgClient) as a named prepared statement:
// Drizzle sends raw SQL unprepared, and planning the claim cost more than running it (bench/claim,
// docs/benchmarks.md).

const HOLDER_STATES_SQL = HOLDER_STATES.map((s) => `'${s}'`).join(", ");

/**
 * Group-restricted fleets: only their groups' members may claim (admins anywhere). The same rule
 * as fleetAccessible() in groups.ts, written out as text because the claim statement is prepared.
 */
const fleetOpenTo = (fleetId: string) =>
  `(NOT EXISTS (SELECT 1 FROM fleet_groups fg WHERE fg.fleet_id = ${fleetId})
    OR EXISTS (SELECT 1 FROM fleet_groups fg JOIN group_members gm ON gm.group_id = fg.group_id
               WHERE fg.fleet_id = ${fleetId} AND gm.user_id = $1))`;

/**
 * The claim statement, one fixed text per shape (fleet filter, instance-type filter, admin or
 * researcher) so each is prepared once per connection and planned for its own shape.
 * $1 user, $2 actor kind, $3 actor id, $4 ip, then the filters.
 */
/**
 * A fleet's weekly GPU-hour quota, for the claiming researcher ($1): no quota, or less used in the
 * last 7 days than it allows (lablink_gpu_hours, migration 0014).
 */
const underQuota = (fleet: string) =>
  `(${fleet}.gpu_hours_per_week IS NULL OR lablink_gpu_hours($1::text, ${fleet}.id, now() - interval '7 days') < ${fleet}.gpu_hours_per_week)`;

/**
 * Walk-in claims leave alone the ready VMs that bookings starting within the fleet's lead window
 * still need (server/domain/bookings.ts): a fleet with such bookings is claimable only while it
 * has more free ready VMs than bookings waiting for one. VMs already set aside for a booking
 * (`reserved_booking_id`) are skipped by the pick itself. A fleet without a booking policy pays
 * one NULL test.
 */
const walkInAllowed = (fleet: string) =>
  `(${fleet}.booking_policy IS NULL OR (
    SELECT count(*) FROM bookings b
    WHERE b.fleet_id = ${fleet}.id AND b.status = 'booked' AND b.vm_id IS NULL AND b.ends_at > now()
      AND b.starts_at <= now() + make_interval(mins => coalesce((${fleet}.booking_policy->>'leadMinutes')::int, 15))
  ) < (
    SELECT count(*) FROM vms r
    WHERE r.fleet_id = ${fleet}.id AND r.state = 'ready' AND r.healthy AND r.reserved_booking_id IS NULL
  ))`;

const claimSql = (byFleet: boolean, byType: boolean, admin: boolean) => {
  const scope = [
    byFleet ? "v.fleet_id = $5" : null,
    byType
      ? `v.fleet_id IN (SELECT id FROM fleets WHERE instance_type = $${byFleet ? 6 : 5})`
      : null,
    admin ? null : fleetOpenTo("v.fleet_id"),
  ].filter(Boolean);
  const where = (extra: string[]) => [...extra, ...scope].join(" AND ") || "true";
  return `
    WITH held AS (
      SELECT ${vmColumns("vms")} FROM vms
      WHERE vms.holder_id = $1 AND vms.state IN (${HOLDER_STATES_SQL})
    ), pick AS (
      SELECT v.id FROM vms v
      WHERE NOT EXISTS (SELECT 1 FROM held)
        AND ${where([
          "v.state = 'ready'",
          "v.healthy",
          "v.reserved_booking_id IS NULL",
          `v.fleet_id IN (SELECT f.id FROM fleets f WHERE f.status IN ('active', 'scaling') AND ${underQuota("f")} AND ${walkInAllowed("f")})`,
        ])}
      ORDER BY v.state_changed_at, v.id
      LIMIT 1
      FOR UPDATE OF v SKIP LOCKED
    ), claimed AS (
      UPDATE vms SET
        state = 'claimed', holder_id = $1, assignment_id = gen_random_uuid(),
        assignment_acked_id = NULL, claimed_at = now(), released_at = NULL, state_changed_at = now(),
        hold_extensions = 0, hold_extended_minutes = 0
      FROM pick WHERE vms.id = pick.id
      RETURNING ${vmColumns("vms")}
    ), audit AS (
      INSERT INTO audit_events
        (actor_kind, actor_id, ip, action, target_kind, target_id, from_state, to_state, details)
      SELECT $2::actor_kind, $3, $4, 'vm.claim', 'vm', claimed.id::text, 'ready', 'claimed', '{}'::jsonb
      FROM claimed
    ), result AS (
      SELECT 'held' AS outcome, held.* FROM held
      UNION ALL
      SELECT 'claimed' AS outcome, claimed.* FROM claimed
    )
    SELECT result.*, CASE WHEN result.outcome IS NULL THEN (
      WITH over AS (
        SELECT f.id, f.name, f.gpu_hours_per_week AS quota,
          lablink_gpu_hours($1::text, f.id, now() - interval '7 days') AS used
        FROM fleets f WHERE f.gpu_hours_per_week IS NOT NULL AND NOT ${underQuota("f")}
      )
      SELECT jsonb_build_object(
        'ready', count(*) FILTER (
          WHERE v.state = 'ready' AND v.healthy AND v.reserved_booking_id IS NULL
            AND v.fleet_id NOT IN (SELECT id FROM over)
            AND v.fleet_id IN (SELECT f.id FROM fleets f WHERE ${walkInAllowed("f")})),
        -- Ready VMs set aside, or kept free, for bookings starting soon.
        'booked', count(*) FILTER (
          WHERE v.state = 'ready' AND v.healthy AND (v.reserved_booking_id IS NOT NULL
            OR v.fleet_id NOT IN (SELECT f.id FROM fleets f WHERE ${walkInAllowed("f")}))),
        -- Ready VMs this researcher may not claim because their quota on the fleet is used up.
        'overQuota', count(*) FILTER (
          WHERE v.state = 'ready' AND v.healthy AND v.fleet_id IN (SELECT id FROM over)),
        'quota', (SELECT jsonb_build_object('fleet', over.name, 'used', over.used, 'limit', over.quota)
                  FROM over WHERE EXISTS (
                    SELECT 1 FROM vms v WHERE v.fleet_id = over.id
                      AND ${where(["v.state = 'ready'", "v.healthy"])})
                  ORDER BY over.name LIMIT 1),
        'booting', count(*) FILTER (WHERE v.state IN ('provisioning', 'booting', 'rebooting')),
        'inUse', count(*) FILTER (WHERE v.state IN ('claimed', 'releasing', 'draining')),
        'unhealthy', count(*) FILTER (WHERE (v.state = 'ready' AND NOT v.healthy) OR v.state = 'failed'),
        'total', count(*),
        -- Whether a named fleet exists and this researcher may use it, for a precise error.
        'fleetOk', ${
          byFleet
            ? `(SELECT ${admin ? "true" : fleetOpenTo("f.id")} FROM fleets f WHERE f.id = $5)`
            : "true"
        })
      FROM vms v WHERE ${where(["v.state <> 'terminated'"])}
    ) END AS capacity
    FROM (SELECT 1) AS one LEFT JOIN result ON true`;
};

const claimTexts = new Map<string, string>();
function claimText(byFleet: boolean, byType: boolean, admin: boolean): string {
  const key = `${byFleet}/${byType}/${admin}`;
  let text = claimTexts.get(key);
  if (!text) {
    text = claimSql(byFleet, byType, admin);
    claimTexts.set(key, text);
  }
  return text;
}

/** What a failed claim reports about the VMs it could have had (the error's details). */
export type ClaimCapacity = {
  /** Ready VMs this researcher could have had (not counting fleets whose quota they used up). */
  ready: number;
  /** Ready VMs in fleets whose weekly GPU-hour quota this researcher has used up. */
  overQuota: number;
  /** One such fleet, for the message. */
  quota: { fleet: string; used: number; limit: number } | null;
  /** Ready VMs held for bookings starting soon (not for walk-ins). */
  booked: number;
  booting: number;
  inUse: number;
  unhealthy: number;
  total: number;
};

type ClaimRow = Vm & {
  outcome: "held" | "claimed" | null;
  capacity: (ClaimCapacity & { fleetOk: boolean | null }) | null;
};

/**
 * Claims one ready, healthy VM for a researcher, race-free, in one round trip.
 *
 * The statement returns the VM the researcher already holds (idempotent rejoin), or picks a row
 * with `FOR UPDATE SKIP LOCKED` (concurrent claimers skip each other's rows instead of queueing
 * on them), flips it to `claimed` and writes the audit row; with nothing free it returns the
 * capacity counts for the error message. The partial unique index `vms_one_active_per_holder`
 * guarantees one VM per researcher even when the same person claims from many tabs at once: the
 * losers of that race get the winner's VM back.
 */
async function runClaim(
  db: DbOrTx,
  text: string,
  params: (string | null)[],
  userId: string,
): Promise<{ row: ClaimRow } | { rejoined: ClaimResult }> {
  let row: ClaimRow | undefined;
  try {
    [row] = (await pgClient(db).unsafe(text, params, { prepare: true })) as unknown as ClaimRow[];
  } catch (e) {
    // Another request of the same researcher won the race: hand back that VM.
    if (isUniqueViolation(e, "vms_one_active_per_holder")) {
      const vm = await heldVm(db, userId);
      if (vm) return { rejoined: { vm, rejoined: true } };
    }
    throw e;
  }
  if (!row) throw new Error("claim statement returned no row");
  return { row };
}

/** How long a claim that found only locked ready VMs waits before its one retry (±50 %). */
const CLAIM_RETRY_MS = 40;
/** Claims running in this process now (see the retry in claimVm). */
let claimsInFlight = 0;

export async function claimVm(db: DbOrTx, req: ClaimRequest): Promise<ClaimResult> {
  const shape = [!!req.fleetId, !!req.instanceType, req.role === "admin"] as const;
  const params: (string | null)[] = [
    req.userId,
    req.actor.kind,
    req.actor.id,
    req.actor.ip ?? null,
  ];
  if (req.fleetId) params.push(req.fleetId);
  if (req.instanceType) params.push(req.instanceType);

  // `SKIP LOCKED` lets concurrent claimers pass each other's rows, but it also skips a ready VM
  // whose row is locked for a moment by something else: the heartbeat flush (a few milliseconds
  // once a second), a health update, an agent's heartbeat. When the counts say a ready VM exists
  // but none could be taken, and no other claim is running in this process (in a burst the locks
  // are other claimers', whose VMs are gone a moment later), try once more after such a moment.
  // (Waiting on the lock instead, without SKIP LOCKED, queues claimers behind each other in a
  // burst: 943 → 587 claims/s in bench:claim; retrying in a burst too: → 650.)
  claimsInFlight++;
  let ran: Awaited<ReturnType<typeof runClaim>>;
  try {
    ran = await runClaim(db, claimText(...shape), params, req.userId);
    if (
      "row" in ran &&
      !ran.row.outcome &&
      (ran.row.capacity?.ready ?? 0) > 0 &&
      claimsInFlight === 1
    ) {
      await new Promise((r) => setTimeout(r, CLAIM_RETRY_MS * (0.5 + Math.random())));
      ran = await runClaim(db, claimText(...shape), params, req.userId);
    }
  } finally {
    claimsInFlight--;
  }
  if ("rejoined" in ran) return ran.rejoined;
  const row = ran.row;
  const { outcome, capacity, ...vm } = row;
  if (outcome === "claimed") {
    await emitIfPoolEmptied(db, vm.fleetId);
    return { vm, rejoined: false };
  }
  if (outcome === "held") return { vm, rejoined: true };

  // Nothing claimable: say so precisely. A named fleet that does not exist is a 404, one the
  // researcher may not use a 403 — both answered by the same statement (no extra round trip).
  if (capacity && capacity.fleetOk === null) throw new DomainError("NOT_FOUND", "No such fleet.");
  if (capacity && capacity.fleetOk === false) {
    throw new DomainError(
      "FORBIDDEN",
      "This fleet is reserved for particular groups, and you are not in any of them. Ask your LabLink admin.",
    );
  }

  const { fleetOk: _ok, ...c } = capacity ?? {
    ready: 0,
    overQuota: 0,
    quota: null,
    booked: 0,
    booting: 0,
    inUse: 0,
    unhealthy: 0,
    total: 0,
    fleetOk: true,
  };
  if (c.ready === 0 && c.overQuota > 0 && c.quota) {
    const used = Math.round(c.quota.used * 10) / 10;
    await emitEvent(db, {
      type: "quota.reached",
      summary: `A researcher has used ${used} of their ${c.quota.limit} GPU-hours on ${c.quota.fleet}; their claim was refused`,
      data: {
        userId: req.userId,
        fleet: c.quota.fleet,
        limitHours: c.quota.limit,
        usedHours: used,
      },
      onceADayKey: `${req.userId}:${c.quota.fleet}`,
    });
    throw new DomainError(
      "QUOTA_EXCEEDED",
      `You have used ${used} of your ${c.quota.limit} GPU-hours for the last 7 days on ${c.quota.fleet}. They come back as your earlier holds pass out of that window; ask your admin if you need more.`,
      c,
    );
  }
  // Remembered as "waiting" for what the claim asked for: holds there cannot be extended for a while.
  await recordClaimRefusal(db, req);
  throw new DomainError(
    "NO_CAPACITY",
    c.total === 0
      ? "There are no GPU VMs in this pool yet. Ask your admin to add some."
      : c.booting > 0
        ? `No GPU VM is free right now: ${c.ready} ready, ${c.booting} starting up. Try again in a few minutes.`
        : c.ready > 0
          ? "No GPU VM is free right now: the last ones are being handed out. Try again in a moment."
          : `No GPU VM is free right now: ${c.inUse} in use${
              c.booked > 0 ? `, ${c.booked} held for bookings starting soon` : ""
            }${c.unhealthy > 0 ? `, ${c.unhealthy} out of service` : ""}, none starting up.`,
    c,
  );
}

const POOL_EMPTIED_SQL = `
  SELECT f.name,
    (SELECT count(*)::int FROM vms WHERE fleet_id = f.id AND state <> 'terminated') AS total
  FROM fleets f
  WHERE f.id = $1
    AND EXISTS (SELECT 1 FROM webhooks WHERE enabled AND 'pool.empty' = ANY(events))
    AND NOT EXISTS (
      SELECT 1 FROM vms
      WHERE fleet_id = f.id AND state = 'ready' AND healthy AND holder_id IS NULL AND reserved_booking_id IS NULL)`;

/**
 * The `pool.empty` webhook event when this claim took a fleet's last claimable VM. One round
 * trip, and only with a webhook subscribed does it write anything.
 */
async function emitIfPoolEmptied(db: DbOrTx, fleetId: string) {
  const [row] = (await pgClient(db).unsafe(POOL_EMPTIED_SQL, [fleetId], {
    prepare: true,
  })) as unknown as { name: string; total: number }[];
  if (!row) return;
  await emitEvent(db, {
    type: "pool.empty",
    summary: `Fleet ${row.name} has no claimable VM left (${row.total} VMs, none ready and free)`,
    data: { fleetId, fleet: row.name, vms: row.total },
  });
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

// Re-exported: the portal and its tests read it beside sshAccess().
export { DEFAULT_SSH_USER };

/** A host name or IP address safe to print in a shell command (agents report host names). */
const SAFE_HOST = /^[A-Za-z0-9](?:[A-Za-z0-9.:-]{0,252}[A-Za-z0-9])?$/;
/** A POSIX login name (what useradd accepts by default). */
const SAFE_USER = /^[a-z_][a-z0-9_-]{0,31}$/;

/** How to reach a VM over SSH: the public address, else the private one, else its host name. */
export function sshAccess(vm: {
  publicIp: string | null;
  privateIp: string | null;
  hostname: string | null;
  sshUser: string | null;
}) {
  const address =
    [vm.publicIp, vm.privateIp, vm.hostname].find((a) => a && SAFE_HOST.test(a)) ?? null;
  const user = vm.sshUser && SAFE_USER.test(vm.sshUser) ? vm.sshUser : DEFAULT_SSH_USER;
  return { address, user, command: address ? `ssh ${user}@${address}` : null };
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
      idleSince: vms.idleSince,
      /** When the idle limit releases it, while the agent reports it idle; null otherwise. */
      idleReleaseAt: idleReleaseAtSql(),
      holdExtensions: vms.holdExtensions,
      holdExtendedMinutes: vms.holdExtendedMinutes,
      hostname: vms.hostname,
      publicIp: vms.publicIp,
      privateIp: vms.privateIp,
      agentReady: sql<boolean>`${vms.assignmentAckedId} IS NOT DISTINCT FROM ${vms.assignmentId} AND ${vms.assignmentId} IS NOT NULL`,
      sshUser: sql<string | null>`${fleets.config}->>'sshUser'`,
      assignmentId: vms.assignmentId,
      driver: fleets.driver,
      recoveryPolicy: fleets.recoveryPolicy,
      notice: {
        at: vmRecoveries.noticeAt,
        holderId: vmRecoveries.noticeHolderId,
        next: vmRecoveries.noticeNext,
      },
      fleet: {
        id: fleets.id,
        name: fleets.name,
        instanceType: fleets.instanceType,
        gpuModel: fleets.gpuModel,
        maxHoldMinutes: fleets.maxHoldMinutes,
        idleReleaseMinutes: fleets.idleReleaseMinutes,
        holdExtendMinutes: fleets.holdExtendMinutes,
        maxHoldExtensions: fleets.maxHoldExtensions,
        maxTotalHoldMinutes: fleets.maxTotalHoldMinutes,
      },
    })
    .from(vms)
    .innerJoin(fleets, eq(fleets.id, vms.fleetId))
    .leftJoin(vmRecoveries, eq(vmRecoveries.vmId, vms.id))
    .where(and(eq(vms.holderId, userId), inArray(vms.state, HOLDER_STATES)));
  if (!row) return null;
  const { sshUser, assignmentId, driver, recoveryPolicy, notice, ...vm } = row;
  const noticeMinutes = recoveryPolicyOf(recoveryPolicy).holderNoticeMinutes;
  const limit = vm.fleet.maxHoldMinutes;
  return {
    ...vm,
    // Cloud VMs give each assignment its own account (docs/security.md); others the fleet's login.
    ssh: sshAccess({
      ...vm,
      sshUser: driver === "terraform" && assignmentId ? researchAccountName(assignmentId) : sshUser,
    }),
    /**
     * Automatic recovery told this holder it will reboot (or replace) the VM at `at`; null when
     * no notice is pending (server/domain/recovery.ts).
     */
    recoveryNotice:
      notice?.at && notice.holderId === userId
        ? {
            noticedAt: notice.at,
            at: new Date(notice.at.getTime() + noticeMinutes * 60_000),
            /** false: the VM is replaced or taken out of service, not given back. */
            comesBack: notice.next === "warm_reboot" || notice.next === "cold_reboot",
          }
        : null,
    /** When the hold limit releases this VM; null without a limit. */
    holdExpiresAt:
      limit !== null && vm.claimedAt
        ? new Date(vm.claimedAt.getTime() + (limit + vm.holdExtendedMinutes) * 60_000)
        : null,
    /** What "Extend" would do now by the fleet's rules; null when holds there cannot be extended. */
    extension: extensionOffer(vm.fleet, vm),
  };
}

/** Display name of a user, for the agent (no email). */
export async function displayNameOf(db: DbOrTx, userId: string): Promise<string> {
  const [u] = await db
    .select({ name: users.name, email: users.email })
    .from(users)
    .where(eq(users.id, userId));
  return u?.name ?? u?.email?.split("@")[0] ?? "researcher";
}
