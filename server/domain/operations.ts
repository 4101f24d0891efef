import { and, asc, desc, eq, gt, inArray, lt, type SQL, sql } from "drizzle-orm";
import type { Db, DbOrTx } from "../db/client";
import { isUniqueViolation } from "../db/errors";
import {
  fleets,
  type Operation,
  type OperationKind,
  type OperationProgress,
  type OperationStatus,
  operationLogs,
  operations,
  users,
} from "../db/schema";
import { audit } from "./audit";
import { DomainError } from "./errors";
import { type Actor, systemActor } from "./vm-state";
import { emitEvent } from "./webhook-events";

/** A huge log keeps its first LOG_HEAD and last LOG_TAIL lines; the middle is dropped. */
export const LOG_HEAD = 2_000;
export const LOG_TAIL = 3_000;
export const TERMINAL: readonly OperationStatus[] = ["succeeded", "failed", "cancelled"];

export type LogLevel = "info" | "warn" | "error";

export type OperationRequest = {
  fleetId: string;
  kind: OperationKind;
  vmId?: string | null;
  params?: Record<string, unknown>;
  actor: Actor;
  maxAttempts?: number;
};

/**
 * Records a queued operation. The partial unique index `operations_one_active_per_fleet` makes
 * "one operation in flight per fleet" hold however many admins click at once; the loser gets a
 * message naming the operation in its way. Run inside the caller's transaction so the fleet
 * change that goes with it (new size, destroying) is refused with it.
 */
export async function requestOperation(db: DbOrTx, req: OperationRequest): Promise<Operation> {
  try {
    return await db.transaction(async (tx) => {
      const [op] = await tx
        .insert(operations)
        .values({
          fleetId: req.fleetId,
          vmId: req.vmId ?? null,
          kind: req.kind,
          params: req.params ?? {},
          requestedBy: req.actor.kind === "user" ? req.actor.id : null,
          maxAttempts: req.maxAttempts ?? 3,
        })
        .returning();
      if (!op) throw new Error("operation insert returned nothing");
      await audit(
        tx,
        req.actor,
        `operation.${req.kind}`,
        { kind: "fleet", id: req.fleetId },
        { operationId: op.id, vmId: req.vmId ?? null, params: req.params ?? {} },
      );
      // Wakes a worker at commit; the dispatcher's sweep finds it anyway if nobody listens.
      await tx.execute(sql`SELECT pg_notify('lablink_operation', ${op.id})`);
      return op;
    });
  } catch (e) {
    if (!isUniqueViolation(e, "operations_one_active_per_fleet")) throw e;
    const [busy] = await db
      .select({ id: operations.id, kind: operations.kind, status: operations.status })
      .from(operations)
      .where(
        and(eq(operations.fleetId, req.fleetId), inArray(operations.status, ["queued", "running"])),
      );
    throw new DomainError(
      "STATE_CONFLICT",
      busy
        ? `This fleet is busy: a ${busy.kind} operation is ${busy.status}. Wait for it to finish or cancel it, then try again.`
        : "This fleet is busy with another operation; try again in a moment.",
      { operationId: busy?.id ?? null },
    );
  }
}

export async function getOperation(db: DbOrTx, id: string): Promise<Operation> {
  const [op] = await db.select().from(operations).where(eq(operations.id, id));
  if (!op) throw new DomainError("NOT_FOUND", "No such operation.", { operationId: id });
  return op;
}

/** What the admin API shows of an operation (no lease internals). */
export function publicOperation(op: Operation) {
  const { leaseOwner: _o, leaseExpiresAt: _e, ...rest } = op;
  return rest;
}

/** Operations with their fleet's name and who asked (the list and the detail page). */
const selectNamedOperations = (db: DbOrTx) =>
  db
    .select({
      op: operations,
      fleetName: fleets.name,
      requestedByEmail: users.email,
      requestedByName: users.name,
    })
    .from(operations)
    .innerJoin(fleets, eq(fleets.id, operations.fleetId))
    .leftJoin(users, eq(users.id, operations.requestedBy));

function namedOperation(r: {
  op: Operation;
  fleetName: string;
  requestedByEmail: string | null;
  requestedByName: string | null;
}) {
  const { fleetName, requestedByEmail, requestedByName } = r;
  return { ...publicOperation(r.op), fleetName, requestedByEmail, requestedByName };
}

/**
 * A page of operations, newest first, with the fleet's name and who asked. Keyset pagination on
 * (created_at, id): `cursor` is the previous page's last id, whose exact timestamp is read back
 * in SQL (a JavaScript Date would round microseconds away and skip or repeat rows).
 */
export async function listOperations(
  db: DbOrTx,
  q: {
    fleetId?: string;
    status?: OperationStatus[];
    kind?: OperationKind[];
    limit: number;
    before?: Date;
    cursor?: string;
  },
) {
  const conds: SQL[] = [];
  if (q.fleetId) conds.push(eq(operations.fleetId, q.fleetId));
  if (q.status?.length) conds.push(inArray(operations.status, q.status));
  if (q.kind?.length) conds.push(inArray(operations.kind, q.kind));
  if (q.before) conds.push(lt(operations.createdAt, q.before));
  if (q.cursor) {
    const at = sql`(SELECT c.created_at FROM ${operations} c WHERE c.id = ${q.cursor})`;
    conds.push(
      sql`${operations.createdAt} <= ${at} AND (${operations.createdAt} < ${at} OR ${operations.id} < ${q.cursor})`,
    );
  }
  const rows = await selectNamedOperations(db)
    .where(conds.length ? and(...conds) : undefined)
    .orderBy(desc(operations.createdAt), desc(operations.id))
    .limit(q.limit + 1);
  const page = rows.slice(0, q.limit).map(namedOperation);
  return { rows: page, nextCursor: rows.length > q.limit ? (page.at(-1)?.id ?? null) : null };
}

/** One operation with its fleet's name and who asked, for the detail page. */
export async function getOperationDetail(db: DbOrTx, id: string) {
  const [row] = await selectNamedOperations(db).where(eq(operations.id, id));
  if (!row) throw new DomainError("NOT_FOUND", "No such operation.", { operationId: id });
  return namedOperation(row);
}

/**
 * Log lines after `after` (a seq; 0 for the start). `dropped` counts lines cut from the middle
 * of a huge log; `done` tells a poller it can stop once it has read everything.
 */
export async function readLogs(
  db: DbOrTx,
  id: string,
  q: { after: number; limit: number },
): Promise<{
  lines: { seq: number; at: Date; level: string; line: string }[];
  nextCursor: number;
  dropped: number;
  done: boolean;
  status: OperationStatus;
  progress: OperationProgress | null;
}> {
  const op = await getOperation(db, id);
  const lines = await db
    .select({
      seq: operationLogs.seq,
      at: operationLogs.at,
      level: operationLogs.level,
      line: operationLogs.line,
    })
    .from(operationLogs)
    .where(and(eq(operationLogs.operationId, id), gt(operationLogs.seq, q.after)))
    .orderBy(asc(operationLogs.seq))
    .limit(q.limit);
  const nextCursor = lines.at(-1)?.seq ?? q.after;
  return {
    lines,
    nextCursor,
    dropped: Math.max(0, op.logCount - LOG_HEAD - LOG_TAIL),
    done: TERMINAL.includes(op.status) && nextCursor >= op.logCount,
    status: op.status,
    progress: op.progress,
  };
}

/**
 * Appends lines (already redacted) in one transaction: seqs come from the operation's counter,
 * so concurrent appenders never collide, and the middle of a huge log is trimmed so the head
 * (what started) and the tail (how it ended) survive.
 */
export async function appendLogs(
  db: DbOrTx,
  id: string,
  lines: { line: string; level: LogLevel }[],
): Promise<void> {
  if (lines.length === 0) return;
  await db.transaction(async (tx) => {
    const [row] = await tx
      .update(operations)
      .set({ logCount: sql`${operations.logCount} + ${lines.length}` })
      .where(eq(operations.id, id))
      .returning({ end: operations.logCount });
    if (!row) return;
    const first = row.end - lines.length + 1;
    const rows = lines
      .map((l, i) => ({ operationId: id, seq: first + i, level: l.level, line: l.line }))
      // Lines that would be trimmed at once are not written at all.
      .filter((r) => r.seq <= LOG_HEAD || r.seq > row.end - LOG_TAIL);
    if (rows.length) await tx.insert(operationLogs).values(rows);
    if (row.end > LOG_HEAD + LOG_TAIL) {
      await tx
        .delete(operationLogs)
        .where(
          and(
            eq(operationLogs.operationId, id),
            gt(operationLogs.seq, LOG_HEAD),
            sql`${operationLogs.seq} <= ${row.end - LOG_TAIL}`,
          ),
        );
    }
  });
}

/** Takes a queued operation for this worker; null if another worker took it or it was cancelled. */
export async function claimOperation(
  db: DbOrTx,
  id: string,
  owner: string,
  leaseSeconds: number,
): Promise<Operation | null> {
  const [op] = await db
    .update(operations)
    .set({
      status: "running",
      attempts: sql`${operations.attempts} + 1`,
      leaseOwner: owner,
      leaseExpiresAt: sql`now() + make_interval(secs => ${leaseSeconds})`,
      startedAt: sql`coalesce(${operations.startedAt}, now())`,
    })
    .where(and(eq(operations.id, id), eq(operations.status, "queued")))
    .returning();
  return op ?? null;
}

/**
 * Extends the lease; says whether someone asked to cancel. `lost` means another worker (or the
 * sweeper) took the operation away: the holder must stop at once.
 */
export async function renewLease(
  db: DbOrTx,
  id: string,
  owner: string,
  leaseSeconds: number,
): Promise<{ lost: boolean; cancelRequested: boolean }> {
  const [row] = await db
    .update(operations)
    .set({ leaseExpiresAt: sql`now() + make_interval(secs => ${leaseSeconds})` })
    .where(
      and(
        eq(operations.id, id),
        eq(operations.status, "running"),
        eq(operations.leaseOwner, owner),
      ),
    )
    .returning({ cancelRequestedAt: operations.cancelRequestedAt });
  return { lost: !row, cancelRequested: !!row?.cancelRequestedAt };
}

export async function setProgress(db: DbOrTx, id: string, progress: OperationProgress) {
  await db.update(operations).set({ progress }).where(eq(operations.id, id));
}

/** Ends a run this worker holds. Returns false if the lease was lost meanwhile. */
export async function finishOperation(
  db: DbOrTx,
  id: string,
  owner: string,
  result: { status: "succeeded" | "failed" | "cancelled" | "queued"; error?: string | null },
): Promise<boolean> {
  const requeue = result.status === "queued";
  return db.transaction(async (tx) => {
    const [row] = await tx
      .update(operations)
      .set({
        status: result.status,
        error: result.error ?? null,
        leaseOwner: null,
        leaseExpiresAt: null,
        finishedAt: requeue ? null : sql`now()`,
      })
      .where(
        and(
          eq(operations.id, id),
          eq(operations.status, "running"),
          eq(operations.leaseOwner, owner),
        ),
      )
      .returning();
    if (!row) return false;
    if (result.status === "failed") await emitOperationFailed(tx, row);
    if (
      result.status === "succeeded" &&
      (row.kind === "fleet.create" || row.kind === "fleet.scale")
    ) {
      const [fleet] = await tx
        .select({ name: fleets.name, desiredSize: fleets.desiredSize })
        .from(fleets)
        .where(eq(fleets.id, row.fleetId));
      if (fleet)
        await emitEvent(tx, {
          type: "fleet.at_size",
          summary: `Fleet ${fleet.name} is at its size of ${fleet.desiredSize}`,
          data: {
            fleetId: row.fleetId,
            fleet: fleet.name,
            size: fleet.desiredSize,
            operationId: row.id,
          },
        });
    }
    return true;
  });
}

/** The `operation.failed` webhook event, in the transaction that records the failure. */
async function emitOperationFailed(tx: DbOrTx, op: Operation) {
  const [fleet] = await tx
    .select({ name: fleets.name })
    .from(fleets)
    .where(eq(fleets.id, op.fleetId));
  await emitEvent(tx, {
    type: "operation.failed",
    summary: `${op.kind} on fleet ${fleet?.name ?? op.fleetId} failed${op.error ? `: ${op.error}` : ""}`,
    data: {
      operationId: op.id,
      kind: op.kind,
      fleetId: op.fleetId,
      fleet: fleet?.name ?? null,
      vmId: op.vmId,
      error: op.error,
    },
  });
}

/**
 * Cancels a queued operation at once; asks the worker running one to stop (it interrupts the
 * driver gracefully and marks the operation cancelled when the driver has stopped).
 */
export async function requestCancel(db: Db, id: string, actor: Actor): Promise<Operation> {
  return db.transaction(async (tx) => {
    const [op] = await tx.select().from(operations).where(eq(operations.id, id)).for("update");
    if (!op) throw new DomainError("NOT_FOUND", "No such operation.", { operationId: id });
    if (TERMINAL.includes(op.status)) {
      throw new DomainError("STATE_CONFLICT", `This operation already ${op.status}.`, {
        status: op.status,
      });
    }
    const byUser = actor.kind === "user" ? actor.id : null;
    const [updated] = await tx
      .update(operations)
      .set(
        op.status === "queued"
          ? {
              status: "cancelled",
              finishedAt: sql`now()`,
              cancelRequestedAt: sql`now()`,
              cancelRequestedBy: byUser,
              error: "cancelled before it started",
            }
          : {
              cancelRequestedAt: sql`coalesce(${operations.cancelRequestedAt}, now())`,
              cancelRequestedBy: byUser,
            },
      )
      .where(eq(operations.id, id))
      .returning();
    await audit(
      tx,
      actor,
      "operation.cancel",
      { kind: "operation", id: id },
      { kind: op.kind, fleetId: op.fleetId },
      { from: op.status, to: updated?.status ?? op.status },
    );
    if (op.status === "queued") await revertFleetStatus(tx, op);
    return updated as Operation;
  });
}

/** A fleet whose create/scale/destroy ended without success goes back to a state that says so. */
export async function revertFleetStatus(db: DbOrTx, op: Operation, failed = false) {
  if (op.kind === "fleet.create") {
    await db
      .update(fleets)
      .set({ status: failed ? "failed" : "active", updatedAt: sql`now()` })
      .where(eq(fleets.id, op.fleetId));
  } else if (op.kind === "fleet.scale" || op.kind === "fleet.destroy") {
    await db
      .update(fleets)
      .set({
        status: failed && op.kind === "fleet.destroy" ? "failed" : "active",
        updatedAt: sql`now()`,
      })
      .where(
        and(
          eq(fleets.id, op.fleetId),
          inArray(fleets.status, ["scaling", "destroying", "creating"]),
        ),
      );
  }
}

export type Recovered = { id: string; outcome: "requeued" | "failed"; attempts: number };

/**
 * Finds operations whose worker died mid-run (lease expired) and, per policy, queues them again
 * (drivers are idempotent: applying twice leaves the cloud as applying once) or fails them
 * after `max_attempts`. Whatever the dead run created is found by the reconciler.
 */
export async function recoverInterrupted(db: Db): Promise<Recovered[]> {
  const stale = await db
    .select()
    .from(operations)
    .where(and(eq(operations.status, "running"), lt(operations.leaseExpiresAt, sql`now()`)));
  const out: Recovered[] = [];
  for (const op of stale) {
    const retry = op.attempts < op.maxAttempts && !op.cancelRequestedAt;
    const outcome = await db.transaction(async (tx) => {
      const [row] = await tx
        .update(operations)
        .set(
          retry
            ? { status: "queued", leaseOwner: null, leaseExpiresAt: null }
            : {
                status: op.cancelRequestedAt ? "cancelled" : "failed",
                error: op.cancelRequestedAt
                  ? "cancelled; the worker stopped during the run"
                  : `interrupted: the worker stopped during the run (${op.attempts} of ${op.maxAttempts} attempts used)`,
                leaseOwner: null,
                leaseExpiresAt: null,
                finishedAt: sql`now()`,
              },
        )
        .where(
          and(
            eq(operations.id, op.id),
            eq(operations.status, "running"),
            lt(operations.leaseExpiresAt, sql`now()`),
          ),
        )
        .returning();
      if (!row) return null;
      if (row.status === "failed") await emitOperationFailed(tx, row);
      await audit(
        tx,
        systemActor,
        "operation.interrupted",
        { kind: "operation", id: op.id },
        {
          kind: op.kind,
          fleetId: op.fleetId,
          attempts: op.attempts,
          lastOwner: op.leaseOwner,
        },
        { from: "running", to: retry ? "queued" : "failed" },
      );
      if (!retry) await revertFleetStatus(tx, op, !op.cancelRequestedAt);
      return retry ? "requeued" : "failed";
    });
    if (!outcome) continue;
    await appendLogs(db, op.id, [
      {
        level: "warn",
        line: retry
          ? `The worker running this operation stopped (attempt ${op.attempts} of ${op.maxAttempts}); queued again.`
          : `The worker running this operation stopped (attempt ${op.attempts} of ${op.maxAttempts}); giving up.`,
      },
    ]);
    out.push({ id: op.id, outcome, attempts: op.attempts });
  }
  return out;
}

/** Queued operations, oldest first, for the dispatcher to hand to pg-boss. */
export async function queuedOperationIds(db: DbOrTx, limit = 100): Promise<string[]> {
  const rows = await db
    .select({ id: operations.id })
    .from(operations)
    .where(eq(operations.status, "queued"))
    .orderBy(asc(operations.createdAt))
    .limit(limit);
  return rows.map((r) => r.id);
}
