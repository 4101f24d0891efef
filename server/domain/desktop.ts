import { randomUUID } from "node:crypto";
import { and, eq, gt, inArray, isNull, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { type DesktopSession, desktopSessions, users, type Vm, vms } from "../db/schema";
import { type AgentCommand, DESKTOP_MIN_PROTOCOL_VERSION } from "../protocol/agent";
import { audit } from "./audit";
import { DomainError } from "./errors";
import type { Actor } from "./vm-state";

/**
 * Browser desktop (issue #13 §1). The web process relays a viewer's WebSocket to the VM agent's
 * outbound WebSocket (server/desktop-relay.ts); this module decides who may open one, records
 * each relay, and turns a waiting relay into the agent's `desktop` command.
 */

/** A relay the agent has not connected to within this time is given up (the viewer retries). */
export const DESKTOP_PAIR_TIMEOUT_S = 30;

/** States in which the holder works on the VM and a desktop can be opened. */
const DESKTOP_STATES = ["claimed", "draining"] as const;

export type DesktopGrant = {
  vm: Pick<Vm, "id" | "name" | "state" | "assignmentId" | "holderId">;
  assignmentId: string;
  /** The viewer is an admin looking at someone else's VM (audited, the holder is told). */
  admin: boolean;
};

/**
 * May this user open the desktop of this VM now? The holder of its current assignment may; an
 * admin may (as an audited admin view). Anyone else gets NOT_FOUND, the same answer as for a VM
 * that does not exist, so a changed id reveals nothing.
 */
export async function authorizeDesktop(
  db: DbOrTx,
  req: { vmId: string; userId: string },
): Promise<DesktopGrant> {
  const [row] = await db
    .select({
      id: vms.id,
      name: vms.name,
      state: vms.state,
      assignmentId: vms.assignmentId,
      holderId: vms.holderId,
      protocol: vms.agentProtocolVersion,
      role: sql<
        string | null
      >`(SELECT ${users.role} FROM ${users} WHERE ${users.id} = ${req.userId})`,
    })
    .from(vms)
    .where(eq(vms.id, req.vmId));
  const role = row?.role ?? null;
  const holder = row?.holderId === req.userId;
  if (!row || role === null || (!holder && role !== "admin")) {
    throw new DomainError("NOT_FOUND", "There is no desktop for you on this VM.");
  }
  if (
    !row.assignmentId ||
    !row.holderId ||
    !(DESKTOP_STATES as readonly string[]).includes(row.state)
  ) {
    throw new DomainError(
      "STATE_CONFLICT",
      holder
        ? `Your VM is ${row.state}; its desktop opens while you hold it.`
        : `Nobody works on this VM now (${row.state}).`,
      { state: row.state },
    );
  }
  if ((row.protocol ?? 1) < DESKTOP_MIN_PROTOCOL_VERSION) {
    throw new DomainError(
      "NOT_SUPPORTED",
      "This VM's agent is too old for the browser desktop; it needs an agent update.",
    );
  }
  const { protocol: _p, role: _r, ...vm } = row;
  return { vm, assignmentId: row.assignmentId, admin: !holder };
}

/** Records a new relay for a granted viewer and wakes the agent's long poll. */
export async function openDesktopSession(
  db: DbOrTx,
  req: { grant: DesktopGrant; viewerId: string; actor: Actor },
): Promise<DesktopSession> {
  const { grant } = req;
  return db.transaction(async (tx) => {
    const [row] = await tx
      .insert(desktopSessions)
      .values({
        id: randomUUID(),
        vmId: grant.vm.id,
        assignmentId: grant.assignmentId,
        viewerId: req.viewerId,
        admin: grant.admin,
      })
      .returning();
    if (!row) throw new Error("desktop session insert returned nothing");
    if (grant.admin) {
      await audit(
        tx,
        req.actor,
        "desktop.admin_viewed",
        { kind: "vm", id: grant.vm.id },
        { relayId: row.id, assignmentId: grant.assignmentId, holderId: grant.vm.holderId },
      );
    }
    await tx.execute(
      sql`SELECT pg_notify('lablink_vm', json_build_object('id', ${grant.vm.id}::uuid)::text)`,
    );
    return row;
  });
}

/** The `desktop` commands for a VM's agent: relays of its current assignment still waiting. */
export async function desktopCommandsFor(db: DbOrTx, vm: Vm): Promise<AgentCommand[]> {
  if ((vm.agentProtocolVersion ?? 1) < DESKTOP_MIN_PROTOCOL_VERSION || !vm.assignmentId) return [];
  const rows = await db
    .select({ id: desktopSessions.id })
    .from(desktopSessions)
    .where(
      and(
        eq(desktopSessions.vmId, vm.id),
        eq(desktopSessions.assignmentId, vm.assignmentId),
        isNull(desktopSessions.connectedAt),
        isNull(desktopSessions.closedAt),
        gt(
          desktopSessions.createdAt,
          sql`now() - make_interval(secs => ${DESKTOP_PAIR_TIMEOUT_S})`,
        ),
      ),
    );
  return rows.map((r) => ({
    type: "desktop" as const,
    relayId: r.id,
    assignmentId: vm.assignmentId as string,
  }));
}

/**
 * The agent's socket for a relay arrived: valid only for a waiting relay of the agent's own VM
 * and its current assignment. Returns null otherwise (another VM's relay id, a closed relay).
 */
export async function pairDesktopSession(
  db: DbOrTx,
  req: { relayId: string; vmId: string },
): Promise<DesktopSession | null> {
  const [row] = await db
    .update(desktopSessions)
    .set({ connectedAt: sql`now()` })
    .where(
      and(
        eq(desktopSessions.id, req.relayId),
        eq(desktopSessions.vmId, req.vmId),
        isNull(desktopSessions.connectedAt),
        isNull(desktopSessions.closedAt),
        sql`${desktopSessions.assignmentId} = (SELECT ${vms.assignmentId} FROM ${vms} WHERE ${vms.id} = ${req.vmId} AND ${inArray(vms.state, [...DESKTOP_STATES])})`,
      ),
    )
    .returning();
  return row ?? null;
}

export async function closeDesktopSession(
  db: DbOrTx,
  req: { relayId: string; reason: string },
): Promise<void> {
  await db
    .update(desktopSessions)
    .set({ closedAt: sql`now()`, closeReason: req.reason.slice(0, 200) })
    .where(and(eq(desktopSessions.id, req.relayId), isNull(desktopSessions.closedAt)));
}

/**
 * Of these open relays, the ones whose assignment is over (released, reassigned, VM gone or no
 * longer in a working state): the relay layer closes them at once.
 */
export async function endedDesktopSessions(
  db: DbOrTx,
  relays: readonly { relayId: string; vmId: string; assignmentId: string }[],
): Promise<string[]> {
  if (relays.length === 0) return [];
  const vmIds = [...new Set(relays.map((r) => r.vmId))];
  const rows = await db
    .select({ id: vms.id, state: vms.state, assignmentId: vms.assignmentId })
    .from(vms)
    .where(inArray(vms.id, vmIds));
  const byId = new Map(rows.map((r) => [r.id, r]));
  return relays
    .filter((r) => {
      const vm = byId.get(r.vmId);
      return (
        !vm ||
        vm.assignmentId !== r.assignmentId ||
        !(DESKTOP_STATES as readonly string[]).includes(vm.state)
      );
    })
    .map((r) => r.relayId);
}

/**
 * Relays a web process left open when it stopped (a crash): closed at its next start, so the
 * holder's banner does not outlive them. One web process relays desktops (docs/operations.md).
 */
export async function closeStaleDesktopSessions(db: DbOrTx): Promise<number> {
  const rows = await db
    .update(desktopSessions)
    .set({ closedAt: sql`now()`, closeReason: "web process restarted" })
    .where(isNull(desktopSessions.closedAt))
    .returning({ id: desktopSessions.id });
  return rows.length;
}

/**
 * What the holder's page shows about the desktop: whether it can be opened, and whether an admin
 * is looking at it now (a banner).
 */
export async function desktopStatus(
  db: DbOrTx,
  req: { userId: string; vmId: string },
): Promise<{
  available: boolean;
  /** The caller would view as an admin (someone else holds the VM). */
  asAdmin: boolean;
  vmName: string | null;
  adminViewing: boolean;
  reason: string | null;
}> {
  let grant: DesktopGrant;
  try {
    grant = await authorizeDesktop(db, req);
  } catch (err) {
    if (err instanceof DomainError && err.code !== "NOT_FOUND") {
      return {
        available: false,
        asAdmin: false,
        vmName: null,
        adminViewing: false,
        reason: err.message,
      };
    }
    throw err;
  }
  const [row] = await db
    .select({ n: sql<number>`count(*)::int` })
    .from(desktopSessions)
    .where(
      and(
        eq(desktopSessions.vmId, grant.vm.id),
        eq(desktopSessions.assignmentId, grant.assignmentId),
        eq(desktopSessions.admin, true),
        isNull(desktopSessions.closedAt),
      ),
    );
  return {
    available: true,
    asAdmin: grant.admin,
    vmName: grant.vm.name,
    adminViewing: (row?.n ?? 0) > 0,
    reason: null,
  };
}
