import { and, eq, inArray, sql } from "drizzle-orm";
import { revokeAgentTokens } from "../auth/agent-tokens";
import type { DbOrTx } from "../db/client";
import { type ActorKind, type Vm, type VmState, vms } from "../db/schema";
import { audit } from "./audit";
import { DomainError } from "./errors";
import { emitEvent } from "./webhook-events";

/**
 * The VM lifecycle. This table is the only place that says which state may follow which;
 * every state change in LabLink goes through `transition()` below.
 *
 *   provisioning → booting → ready → claimed → releasing → ready | draining
 *   any live state → terminating → terminated;  any live state → failed
 *   rebooting → claimed (a held VM comes back to its holder) | releasing (no holder: wipe first)
 *   draining = admin: no new claims (holder, if any, keeps working)
 *
 * A machine someone may have used reaches `ready` only through `releasing`, i.e. after the agent
 * acknowledged a wipe: `booting` (a new machine, from `provisioning`) is the only other way in,
 * and `failed` and `rebooting` lead to `releasing` (or to termination), never to `booting`.
 * `draining → ready` is an undrain of a VM already wiped (a holder's release goes through
 * `releasing` first). On fleets with root for researchers the wipe acknowledgement replaces the
 * VM instead (releasing → terminating), see server/domain/replacement.ts.
 */
export const TRANSITIONS = {
  provisioning: ["booting", "terminating", "failed"],
  booting: ["ready", "claimed", "rebooting", "terminating", "failed"],
  ready: ["claimed", "draining", "rebooting", "terminating", "failed"],
  claimed: ["releasing", "draining", "rebooting", "terminating", "failed"],
  releasing: ["ready", "draining", "terminating", "failed"],
  draining: ["ready", "claimed", "releasing", "rebooting", "terminating", "failed"],
  rebooting: ["claimed", "releasing", "terminating", "failed"],
  terminating: ["terminated", "failed"],
  failed: ["rebooting", "terminating"],
  terminated: [],
} as const satisfies Record<VmState, readonly VmState[]>;

export const VM_STATES = Object.keys(TRANSITIONS) as VmState[];

/** States in which a VM exists and costs money. */
export const LIVE_STATES: readonly VmState[] = VM_STATES.filter(
  (s) => s !== "terminated" && s !== "failed",
);
/** States in which a VM may have a researcher on it (a held VM keeps its holder across a reboot). */
export const HOLDER_STATES = [
  "claimed",
  "draining",
  "rebooting",
  "booting",
] as const satisfies readonly VmState[];

export function canTransition(from: VmState, to: VmState): boolean {
  return (TRANSITIONS[from] as readonly VmState[]).includes(to);
}

/** Every state from which `to` may be reached. */
export function sourcesOf(to: VmState): VmState[] {
  return VM_STATES.filter((from) => canTransition(from, to));
}

export type Actor = { kind: ActorKind; id: string | null; ip?: string | null };

export const systemActor: Actor = { kind: "system", id: null };

/** Columns a transition may set beside the state itself. */
export type TransitionPatch = Partial<
  Pick<
    Vm,
    | "holderId"
    | "assignmentId"
    | "claimedAt"
    | "releasedAt"
    | "drainRequested"
    | "healthy"
    | "healthReasons"
    | "bootId"
    | "providerId"
    | "startupIssue"
  >
>;

export type TransitionRequest = {
  vmId: string;
  to: VmState;
  /** Expected current state(s). Defaults to every state the table allows to reach `to`. */
  from?: VmState | readonly VmState[];
  actor: Actor;
  action: string;
  patch?: TransitionPatch;
  details?: Record<string, unknown>;
};

/**
 * Moves one VM to a new state: a guarded `UPDATE ... WHERE state IN (<from>)` and its audit row,
 * in one transaction. A lost race updates nothing and raises STATE_CONFLICT; a move the table
 * does not allow raises ILLEGAL_TRANSITION before touching the database.
 */
export async function transition(db: DbOrTx, req: TransitionRequest): Promise<Vm> {
  const requested = req.from === undefined ? sourcesOf(req.to) : ([] as VmState[]).concat(req.from);
  const illegal = requested.filter((from) => !canTransition(from, req.to));
  if (illegal.length > 0 || requested.length === 0) {
    throw new DomainError(
      "ILLEGAL_TRANSITION",
      `A VM cannot go from ${illegal.join(" or ") || "any state"} to ${req.to}.`,
      { from: illegal, to: req.to },
    );
  }

  return db.transaction(async (tx) => {
    // Lock the row first so the audit row records the state we actually left.
    const [current] = await tx
      .select({ state: vms.state })
      .from(vms)
      .where(eq(vms.id, req.vmId))
      .for("update");
    if (!current) throw new DomainError("NOT_FOUND", "No such VM.", { vmId: req.vmId });
    if (!requested.includes(current.state)) {
      if (!canTransition(current.state, req.to)) {
        throw new DomainError(
          "ILLEGAL_TRANSITION",
          `This VM is ${current.state}; it cannot become ${req.to}.`,
          { from: current.state, to: req.to },
        );
      }
      throw new DomainError(
        "STATE_CONFLICT",
        `This VM is ${current.state}, not ${requested.join(" or ")}; nothing was changed.`,
        { state: current.state, expected: requested },
      );
    }

    const [updated] = await tx
      .update(vms)
      .set({
        ...req.patch,
        // Leaving the held states always frees the researcher (the schema checks it too).
        ...(canHaveHolder(req.to) ? {} : { holderId: null }),
        state: req.to,
        stateChangedAt: sql`now()`,
      })
      .where(and(eq(vms.id, req.vmId), inArray(vms.state, requested)))
      .returning();
    if (!updated) {
      throw new DomainError(
        "STATE_CONFLICT",
        "The VM changed state meanwhile; nothing was changed.",
      );
    }

    // A terminated VM's agent tokens die with it, in the same transaction.
    if (req.to === "terminated") await revokeAgentTokens(tx, req.vmId);

    await audit(tx, req.actor, req.action, { kind: "vm", id: req.vmId }, req.details ?? {}, {
      from: current.state,
      to: req.to,
    });
    if (req.to === "failed") {
      const reason =
        req.patch?.healthReasons?.[0] ?? req.details?.reason ?? req.details?.error ?? null;
      await emitEvent(tx, {
        type: "vm.failed",
        summary: `VM ${updated.name} failed${typeof reason === "string" ? `: ${reason}` : ""}`,
        data: {
          vmId: updated.id,
          name: updated.name,
          fleetId: updated.fleetId,
          from: current.state,
          reason: typeof reason === "string" ? reason : null,
        },
      });
    }
    return updated;
  });
}

export function canHaveHolder(state: VmState): boolean {
  return (HOLDER_STATES as readonly VmState[]).includes(state);
}
