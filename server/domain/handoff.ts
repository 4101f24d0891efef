import { randomUUID } from "node:crypto";
import { and, eq, sql } from "drizzle-orm";
import { seal, unseal } from "../auth/secret-box";
import type { DbOrTx } from "../db/client";
import { crdHandoffs, type Vm } from "../db/schema";
import type { AgentCommand } from "../protocol/agent";
import { CONNECT_MIN_PROTOCOL_VERSION } from "../protocol/agent";
import { heldVm, myVm } from "./allocation";
import { audit } from "./audit";
import { DomainError } from "./errors";
import type { Actor } from "./vm-state";

/**
 * Chrome Remote Desktop hand-off. The researcher pastes the command Google's headless setup page
 * shows, e.g.
 *   DISPLAY= /opt/google/chrome-remote-desktop/start-host --code="4/0Ab..." \
 *     --redirect-url="https://remotedesktop.google.com/_/oauthredirect" --name=$(hostname)
 * Only the --code value is kept, and only if it is made of the characters such codes have; the
 * agent rebuilds the rest itself. Nothing else of the pasted text reaches the VM.
 */
export const CRD_CODE = /^[A-Za-z0-9/_.-]{8,512}$/;

/** A pending request the agent has not picked up within this time is dropped (codes expire). */
export const HANDOFF_TTL_MINUTES = 15;

export function parseCrdCommand(command: string): string {
  const matches = [...command.matchAll(/--code=("([^"]*)"|'([^']*)'|([^\s"']*))/g)];
  if (matches.length === 0) {
    throw new DomainError(
      "INVALID_INPUT",
      "That is not the Chrome Remote Desktop command: it has no --code=. Copy the Debian Linux command from remotedesktop.google.com/headless.",
    );
  }
  if (matches.length > 1) {
    throw new DomainError("INVALID_INPUT", "The command has more than one --code; paste it once.");
  }
  const m = matches[0] as RegExpMatchArray;
  const code = m[2] ?? m[3] ?? m[4] ?? "";
  if (!CRD_CODE.test(code)) {
    throw new DomainError(
      "INVALID_INPUT",
      "The --code value has characters a Chrome Remote Desktop code cannot have. Copy the command again from Google's page.",
    );
  }
  return code;
}

/** At least 6 digits, and not one any neighbour would guess first. */
export function checkPin(pin: string): void {
  if (!/^[0-9]{6,32}$/.test(pin)) {
    throw new DomainError("INVALID_INPUT", "The PIN must be 6 to 32 digits.");
  }
  const digits = [...pin].map(Number);
  const same = digits.every((d) => d === digits[0]);
  const step = (k: number) =>
    digits.every((d, i) => i === 0 || d === ((digits[i - 1] ?? 0) + k + 10) % 10);
  if (same || step(1) || step(-1)) {
    throw new DomainError(
      "INVALID_INPUT",
      "Choose a PIN that is not a repeated or sequential run of digits.",
    );
  }
}

/** The researcher asks for a remote-desktop hand-off to the VM they hold. */
export async function requestCrdHandoff(
  db: DbOrTx,
  req: { userId: string; command: string; pin: string; actor: Actor },
): Promise<{ requestId: string; status: "pending" }> {
  const code = parseCrdCommand(req.command);
  checkPin(req.pin);
  const vm = await heldVm(db, req.userId);
  if (!vm?.assignmentId) {
    throw new DomainError("NOT_FOUND", "You do not hold a VM; claim one first.");
  }
  if (vm.state !== "claimed" && vm.state !== "draining") {
    throw new DomainError("STATE_CONFLICT", `Your VM is ${vm.state}; try again when it is ready.`, {
      state: vm.state,
    });
  }
  const requestId = randomUUID();
  const sealed = seal(JSON.stringify({ code, pin: req.pin }));
  await db.transaction(async (tx) => {
    const values = {
      vmId: vm.id,
      requestId,
      assignmentId: vm.assignmentId as string,
      userId: req.userId,
      status: "pending" as const,
      sealed,
      error: null,
      createdAt: new Date(),
      finishedAt: null,
    };
    await tx
      .insert(crdHandoffs)
      .values(values)
      .onConflictDoUpdate({ target: crdHandoffs.vmId, set: values });
    await audit(tx, req.actor, "vm.crd_requested", { kind: "vm", id: vm.id }, { requestId });
    // Wake the agent's long poll (delivered at commit).
    await tx.execute(
      sql`SELECT pg_notify('lablink_vm', json_build_object('id', ${vm.id}::uuid)::text)`,
    );
  });
  return { requestId, status: "pending" };
}

/** The connect command for a VM's agent, if one is pending. Read-only. */
export async function connectCommandFor(db: DbOrTx, vm: Vm): Promise<AgentCommand | null> {
  if ((vm.agentProtocolVersion ?? 1) < CONNECT_MIN_PROTOCOL_VERSION) return null;
  const pending = await pendingCrdHandoff(db, vm);
  return pending && vm.assignmentId
    ? { type: "connect", method: "crd", assignmentId: vm.assignmentId, ...pending }
    : null;
}

/**
 * The current holder's pending hand-off (code and PIN unsealed), if any. Read-only. Callers gate
 * on what their VM understands: the agent protocol version, or the original client API.
 */
export async function pendingCrdHandoff(
  db: DbOrTx,
  vm: Pick<Vm, "id" | "assignmentId">,
): Promise<{ requestId: string; code: string; pin: string } | null> {
  if (!vm.assignmentId) return null;
  const [row] = await db
    .select({ requestId: crdHandoffs.requestId, sealed: crdHandoffs.sealed })
    .from(crdHandoffs)
    .where(
      and(
        eq(crdHandoffs.vmId, vm.id),
        eq(crdHandoffs.assignmentId, vm.assignmentId),
        eq(crdHandoffs.status, "pending"),
        sql`${crdHandoffs.sealed} IS NOT NULL`,
        sql`${crdHandoffs.createdAt} > now() - make_interval(mins => ${HANDOFF_TTL_MINUTES})`,
      ),
    );
  if (!row?.sealed) return null;
  const opened = unseal(row.sealed);
  if (!opened) return null; // sealed under another key (AUTH_SECRET changed): the researcher retries
  const { code, pin } = JSON.parse(opened) as { code: string; pin: string };
  return { requestId: row.requestId, code, pin };
}

/** The agent reports the hand-off's outcome; the code and PIN are erased either way. */
export async function finishCrdHandoff(
  db: DbOrTx,
  req: { vm: Vm; requestId: string; ok: boolean; error?: string; actor: Actor },
): Promise<void> {
  await db.transaction(async (tx) => {
    const updated = await tx
      .update(crdHandoffs)
      .set({
        status: req.ok ? "succeeded" : "failed",
        error: req.ok ? null : (req.error ?? "unknown error").slice(0, 500),
        sealed: null,
        finishedAt: new Date(),
      })
      .where(
        and(
          eq(crdHandoffs.vmId, req.vm.id),
          eq(crdHandoffs.requestId, req.requestId),
          eq(crdHandoffs.status, "pending"),
        ),
      )
      .returning({ requestId: crdHandoffs.requestId });
    if (updated.length === 0) {
      const [row] = await tx
        .select({ requestId: crdHandoffs.requestId })
        .from(crdHandoffs)
        .where(eq(crdHandoffs.vmId, req.vm.id));
      // A repeat of an ack we already processed is fine; an ack for a superseded request is not.
      if (row?.requestId === req.requestId) return;
      throw new DomainError("STATE_CONFLICT", "That connection request is no longer current.");
    }
    await audit(
      tx,
      req.actor,
      req.ok ? "vm.crd_connected" : "vm.crd_failed",
      { kind: "vm", id: req.vm.id },
      {
        requestId: req.requestId,
        ...(req.ok ? {} : { error: req.error ?? "unknown error" }),
      },
    );
  });
}

/** What the researcher sees about their hand-off (never the code or PIN). */
export async function handoffStatusFor(db: DbOrTx, vmId: string) {
  const [row] = await db
    .select({
      requestId: crdHandoffs.requestId,
      status: crdHandoffs.status,
      error: crdHandoffs.error,
      requestedAt: crdHandoffs.createdAt,
      finishedAt: crdHandoffs.finishedAt,
      expired: sql<boolean>`${crdHandoffs.status} = 'pending' AND ${crdHandoffs.createdAt} <= now() - make_interval(mins => ${HANDOFF_TTL_MINUTES})`,
    })
    .from(crdHandoffs)
    .where(
      and(
        eq(crdHandoffs.vmId, vmId),
        sql`${crdHandoffs.assignmentId} = (SELECT assignment_id FROM vms WHERE id = ${vmId})`,
      ),
    );
  if (!row) return null;
  const { expired, ...rest } = row;
  return expired
    ? {
        ...rest,
        status: "failed" as const,
        error: "The VM did not pick up the code in time; submit a new one.",
      }
    : rest;
}

/** The researcher's VM (see myVm) with the state of their remote-desktop hand-off. */
export async function myVmWithConnection(db: DbOrTx, userId: string) {
  const vm = await myVm(db, userId);
  if (!vm) return null;
  return { ...vm, connection: { crd: await handoffStatusFor(db, vm.id) } };
}
