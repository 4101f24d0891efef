import { eq, sql } from "drizzle-orm";
import type { Db, DbOrTx } from "../db/client";
import { claimRefusals, fleets } from "../db/schema";
import { audit } from "./audit";
import { DomainError } from "./errors";
import { liveFleet } from "./live-fleet";
import { type Actor, HOLDER_STATES } from "./vm-state";

/**
 * "Someone is waiting" for a fleet: a researcher whose claim that fleet could have served was
 * refused for lack of a free VM within this many minutes, and who holds no VM now. LabLink has no
 * queue of claimants; a refused claim is the only trace of one, recorded when it happens
 * (`claim_refusals`, one row per researcher). Fifteen minutes: about how long a refused researcher
 * keeps trying before giving up, and how long a new VM takes to boot.
 */
export const WAITING_WINDOW_MINUTES = 15;

/** A fleet's rules for "Extend" on My VM. */
export type ExtensionRules = {
  /** Minutes one extension adds. */
  stepMinutes: number;
  /** How many times one hold may be extended. */
  maxExtensions: number;
  /** The longest a hold may last with its extensions, from the claim; null: only the count limits. */
  maxTotalMinutes: number | null;
};

type FleetRules = {
  maxHoldMinutes: number | null;
  holdExtendMinutes: number | null;
  maxHoldExtensions: number;
  maxTotalHoldMinutes: number | null;
};

/**
 * What "Extend" offers on a hold by its fleet's rules, ignoring who waits and quotas (those are
 * checked when asked): the step, and how many extensions are left (0: none left). Null when the
 * fleet's holds cannot be extended at all (no hold limit, or no extension rules).
 */
export function extensionOffer(
  fleet: FleetRules,
  vm: { holdExtensions: number; holdExtendedMinutes: number },
): { stepMinutes: number; left: number; used: number; maxTotalMinutes: number | null } | null {
  const step = fleet.holdExtendMinutes;
  if (fleet.maxHoldMinutes === null || step === null || fleet.maxHoldExtensions <= 0) return null;
  let left = Math.max(0, fleet.maxHoldExtensions - vm.holdExtensions);
  if (fleet.maxTotalHoldMinutes !== null) {
    const room = fleet.maxTotalHoldMinutes - fleet.maxHoldMinutes - vm.holdExtendedMinutes;
    left = Math.min(left, Math.max(0, Math.floor(room / step)));
  }
  return {
    stepMinutes: step,
    left,
    used: vm.holdExtensions,
    maxTotalMinutes: fleet.maxTotalHoldMinutes,
  };
}

/** Records a researcher's claim refused for lack of a free VM: they are waiting (see above). */
export async function recordClaimRefusal(
  db: DbOrTx,
  req: { userId: string; fleetId?: string; instanceType?: string },
): Promise<void> {
  const row = {
    fleetId: req.fleetId ?? null,
    instanceType: req.instanceType ?? null,
    at: sql`now()`,
  };
  await db
    .insert(claimRefusals)
    .values({ userId: req.userId, ...row })
    .onConflictDoUpdate({ target: claimRefusals.userId, set: row });
}

const HOLDER_STATES_SQL = sql.raw(HOLDER_STATES.map((s) => `'${s}'`).join(", "));

/**
 * Someone other than `userId` waits for fleet `f` (an alias of fleets in the enclosing query): a
 * claim for that fleet, or for any fleet / its instance type that they may use, refused lately, and
 * no VM held since.
 */
const someoneWaiting = (userId: string) => sql`EXISTS (
  SELECT 1 FROM claim_refusals r
  WHERE r.at > now() - make_interval(mins => ${WAITING_WINDOW_MINUTES})
    AND r.user_id <> ${userId}::uuid
    AND (r.fleet_id = f.id
      OR (r.fleet_id IS NULL AND (r.instance_type IS NULL OR r.instance_type = f.instance_type)
        AND (NOT EXISTS (SELECT 1 FROM fleet_groups fg WHERE fg.fleet_id = f.id)
          OR EXISTS (SELECT 1 FROM fleet_groups fg JOIN group_members gm ON gm.group_id = fg.group_id
                     WHERE fg.fleet_id = f.id AND gm.user_id = r.user_id))))
    AND NOT EXISTS (SELECT 1 FROM vms h WHERE h.holder_id = r.user_id AND h.state IN (${HOLDER_STATES_SQL})))`;

/** The hold's end once extended (v: the VM, f: its fleet). */
const extendedEnd = sql`v.claimed_at + make_interval(mins => f.max_hold_minutes + v.hold_extended_minutes + f.hold_extend_minutes)`;

/**
 * With the fleet's weekly GPU-hour quota, the hold extended to its new end stays within it: the
 * hours used in the last 7 days (this hold up to now included) plus the rest of the extended hold.
 */
const quotaAllows = (userId: string) => sql`(f.gpu_hours_per_week IS NULL
  OR lablink_gpu_hours(${userId}::text, f.id, now() - interval '7 days')
     + extract(epoch FROM ${extendedEnd} - now()) / 3600 * f.gpu_count <= f.gpu_hours_per_week)`;

export type ExtendedHold = {
  vmId: string;
  holdExpiresAt: Date;
  extensionsUsed: number;
  extensionsLeft: number;
  addedMinutes: number;
};

type Refusal =
  | "no_hold_limit"
  | "not_extendable"
  | "not_claimed"
  | "ended"
  | "max_extensions"
  | "max_total"
  | "someone_waiting"
  | "quota";

/**
 * "Extend" on My VM: adds the fleet's step to the researcher's hold, in one guarded UPDATE whose
 * WHERE holds every rule (a hold limit and extension rules, extensions left, the total, nobody
 * waiting for the fleet, the quota). Two extends at once cannot both pass a rule: the second waits
 * for the first's row lock and Postgres checks its WHERE again on the updated row. Audited as
 * `hold.extended` in the same transaction. A refusal says why (PRECONDITION_FAILED, or FORBIDDEN
 * for the quota), with `details.reason`.
 */
export async function extendHold(
  db: Db,
  req: { userId: string; actor: Actor },
): Promise<ExtendedHold> {
  return db.transaction(async (tx) => {
    const rows = await tx.execute<{
      id: string;
      fleet_id: string;
      hold_extensions: number;
      hold_extended_minutes: number;
      ends_at: Date | string;
      step: number;
      max_hold: number;
      max_ext: number;
      max_total: number | null;
    }>(sql`
      UPDATE vms v SET
        hold_extensions = v.hold_extensions + 1,
        hold_extended_minutes = v.hold_extended_minutes + f.hold_extend_minutes
      FROM fleets f
      WHERE f.id = v.fleet_id
        AND v.holder_id = ${req.userId}::uuid AND v.state = 'claimed'
        AND f.max_hold_minutes IS NOT NULL AND f.hold_extend_minutes IS NOT NULL
        AND v.claimed_at + make_interval(mins => f.max_hold_minutes + v.hold_extended_minutes) > now()
        AND v.hold_extensions < f.max_hold_extensions
        AND (f.max_total_hold_minutes IS NULL
          OR f.max_hold_minutes + v.hold_extended_minutes + f.hold_extend_minutes <= f.max_total_hold_minutes)
        AND NOT ${someoneWaiting(req.userId)}
        AND ${quotaAllows(req.userId)}
      RETURNING v.id, v.fleet_id, v.hold_extensions, v.hold_extended_minutes,
        v.claimed_at + make_interval(mins => f.max_hold_minutes + v.hold_extended_minutes) AS ends_at,
        f.hold_extend_minutes AS step, f.max_hold_minutes AS max_hold,
        f.max_hold_extensions AS max_ext, f.max_total_hold_minutes AS max_total`);
    const done = rows[0];
    if (!done) throw await refusal(tx, req.userId);
    const offer = extensionOffer(
      {
        maxHoldMinutes: done.max_hold,
        holdExtendMinutes: done.step,
        maxHoldExtensions: done.max_ext,
        maxTotalHoldMinutes: done.max_total,
      },
      { holdExtensions: done.hold_extensions, holdExtendedMinutes: done.hold_extended_minutes },
    );
    const holdExpiresAt = new Date(done.ends_at);
    await audit(
      tx,
      req.actor,
      "hold.extended",
      { kind: "vm", id: done.id },
      {
        holderId: req.userId,
        fleetId: done.fleet_id,
        addedMinutes: done.step,
        extension: done.hold_extensions,
        extendedMinutes: done.hold_extended_minutes,
        holdExpiresAt: holdExpiresAt.toISOString(),
      },
    );
    return {
      vmId: done.id,
      holdExpiresAt,
      extensionsUsed: done.hold_extensions,
      extensionsLeft: offer?.left ?? 0,
      addedMinutes: done.step,
    };
  });
}

/** Why the guarded UPDATE changed nothing, as the error the researcher reads. */
async function refusal(db: DbOrTx, userId: string): Promise<DomainError> {
  const rows = await db.execute<{
    state: string;
    fleet: string;
    max_hold: number | null;
    step: number | null;
    max_ext: number;
    max_total: number | null;
    ext: number;
    extended: number;
    ended: boolean;
    waiting: boolean;
    quota_ok: boolean;
    quota: number | null;
  }>(sql`
    SELECT v.state, f.name AS fleet, f.max_hold_minutes AS max_hold, f.hold_extend_minutes AS step,
      f.max_hold_extensions AS max_ext, f.max_total_hold_minutes AS max_total,
      v.hold_extensions AS ext, v.hold_extended_minutes AS extended,
      v.claimed_at + make_interval(mins => coalesce(f.max_hold_minutes, 0) + v.hold_extended_minutes) <= now() AS ended,
      ${someoneWaiting(userId)} AS waiting,
      coalesce(${quotaAllows(userId)}, true) AS quota_ok,
      f.gpu_hours_per_week AS quota
    FROM vms v JOIN fleets f ON f.id = v.fleet_id
    WHERE v.holder_id = ${userId}::uuid AND v.state IN (${HOLDER_STATES_SQL})`);
  const r = rows[0];
  if (!r)
    return new DomainError("NOT_FOUND", "You do not hold a VM, so there is nothing to extend.");
  const no = (reason: Refusal, message: string, extra: Record<string, unknown> = {}) =>
    new DomainError(reason === "quota" ? "QUOTA_EXCEEDED" : "NOT_SUPPORTED", message, {
      reason,
      ...extra,
    });
  if (r.max_hold === null)
    return no("no_hold_limit", `Fleet ${r.fleet} has no hold limit: your hold does not end.`);
  if (r.step === null || r.max_ext <= 0)
    return no("not_extendable", `Holds on fleet ${r.fleet} cannot be extended.`);
  if (r.state !== "claimed")
    return no(
      "not_claimed",
      r.state === "draining"
        ? "An admin is taking this VM out of service: its hold cannot be extended."
        : "Your VM is restarting: try again once it is back.",
    );
  if (r.ended) return no("ended", "Your hold has already ended: the VM is being released.");
  if (r.ext >= r.max_ext)
    return no(
      "max_extensions",
      `You have used all ${r.max_ext} extension${r.max_ext === 1 ? "" : "s"} fleet ${r.fleet} allows.`,
      { maxExtensions: r.max_ext },
    );
  if (r.max_total !== null && r.max_hold + r.extended + r.step > r.max_total)
    return no(
      "max_total",
      `Another ${r.step} min would take your hold past the ${hours(r.max_total)} fleet ${r.fleet} allows in all.`,
      { maxTotalMinutes: r.max_total },
    );
  if (r.waiting)
    return no(
      "someone_waiting",
      `Someone is waiting for a VM of fleet ${r.fleet}, so holds there cannot be extended now. Save your work before your time is up.`,
      { windowMinutes: WAITING_WINDOW_MINUTES },
    );
  if (!r.quota_ok)
    return no(
      "quota",
      `Another ${r.step} min would take you past your ${r.quota} GPU-hours for the last 7 days on fleet ${r.fleet}.`,
      { limitHours: r.quota },
    );
  // The rules allowed it a moment later (e.g. a waiting researcher got a VM): say so honestly.
  return new DomainError("STATE_CONFLICT", "Your hold changed meanwhile: reload and try again.");
}

const hours = (m: number) => (m % 60 === 0 ? `${m / 60} h` : `${m} min`);

/**
 * Sets a fleet's extension rules (null: holds cannot be extended), audited as
 * `fleet.hold_extension` with from and to. Current holds follow the new rules at their next
 * extension; extensions already given stay. A destroyed fleet cannot be changed.
 */
export async function setHoldExtensionRules(
  db: Db,
  req: { fleetId: string; rules: ExtensionRules | null; actor: Actor },
): Promise<{ fleetId: string; rules: ExtensionRules | null }> {
  return db.transaction(async (tx) => {
    const fleet = await liveFleet(tx, req.fleetId, { forUpdate: true });
    const r = req.rules;
    if (r?.maxTotalMinutes != null && fleet.maxHoldMinutes !== null) {
      if (r.maxTotalMinutes < fleet.maxHoldMinutes + r.stepMinutes) {
        throw new DomainError(
          "INVALID_INPUT",
          `The maximum total must leave room for at least one extension: at least ${fleet.maxHoldMinutes + r.stepMinutes} minutes (the hold limit plus one step).`,
        );
      }
    }
    const from: ExtensionRules | null =
      fleet.holdExtendMinutes === null
        ? null
        : {
            stepMinutes: fleet.holdExtendMinutes,
            maxExtensions: fleet.maxHoldExtensions,
            maxTotalMinutes: fleet.maxTotalHoldMinutes,
          };
    await tx
      .update(fleets)
      .set({
        holdExtendMinutes: r?.stepMinutes ?? null,
        maxHoldExtensions: r?.maxExtensions ?? 0,
        maxTotalHoldMinutes: r?.maxTotalMinutes ?? null,
        updatedAt: sql`now()`,
      })
      .where(eq(fleets.id, req.fleetId));
    await audit(
      tx,
      req.actor,
      "fleet.hold_extension",
      { kind: "fleet", id: req.fleetId },
      {
        from,
        to: r,
      },
    );
    return { fleetId: req.fleetId, rules: r };
  });
}
