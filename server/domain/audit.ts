import { and, desc, eq, gte, like, lt, type SQL, sql } from "drizzle-orm";
import { alias } from "drizzle-orm/pg-core";
import type { DbOrTx } from "../db/client";
import { type ActorKind, auditEvents, users } from "../db/schema";
import { redact } from "./redact";
import type { Actor } from "./vm-state";

/** A state change the audit row records beside its details (`from_state`, `to_state`). */
export type AuditStates = { from: string | null; to: string | null };

/**
 * Writes one audit row: who (actor + IP), did what, to what, when (the row's `at`). The only
 * place that inserts into audit_events row by row (tests/architecture/layers.test.ts checks it).
 */
export async function audit(
  db: DbOrTx,
  actor: Actor,
  action: string,
  target: { kind: string; id: string | null },
  details: Record<string, unknown> = {},
  states?: AuditStates,
): Promise<void> {
  await db.insert(auditEvents).values({
    actorKind: actor.kind,
    actorId: actor.id,
    ip: actor.ip ?? null,
    action,
    targetKind: target.kind,
    targetId: target.id,
    ...(states ? { fromState: states.from, toState: states.to } : {}),
    details,
  });
}

export type AuditQuery = {
  /** Exact action (`vm.drain`), or a prefix when it ends with `*` (`vm.*`). */
  action?: string;
  actorKind?: ActorKind;
  /** A user id, an agent's VM id, or a user's email (case-insensitive, exact). */
  actor?: string;
  targetKind?: string;
  targetId?: string;
  from?: Date;
  to?: Date;
  /** The `nextCursor` of the previous page: the id of its last row. */
  cursor?: number;
  limit: number;
};

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// Details are written without secrets, but a driver's or agent's error text is free-form: keys
// that name a secret, and values that look like one, are blanked on the way out as well.
const SECRET_KEY =
  /(token|secret|password|passphrase|pin|code|private_?key|access_?key|api_?key)$/i;

/** A deep copy of audit details with anything secret-looking replaced by `[redacted]`. */
export function redactDetails(value: unknown, key = ""): unknown {
  if (key && SECRET_KEY.test(key) && !/id$/i.test(key)) {
    return value === null || value === undefined ? value : "[redacted]";
  }
  if (typeof value === "string") return redact(value);
  if (Array.isArray(value)) return value.map((v) => redactDetails(v));
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, redactDetails(v, k)]),
    );
  }
  return value;
}

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

/**
 * One page of the audit log, newest first, with keyset pagination on (at, id): the cursor is the
 * last row's id, and its `at` is read back from the row so microsecond timestamps never skip or
 * repeat a row (a JavaScript Date would round them to milliseconds).
 */
export async function listAuditEvents(db: DbOrTx, q: AuditQuery) {
  const conds: SQL[] = [];
  if (q.action) {
    conds.push(
      q.action.endsWith("*")
        ? like(auditEvents.action, `${escapeLike(q.action.slice(0, -1))}%`)
        : eq(auditEvents.action, q.action),
    );
  }
  if (q.actorKind) conds.push(eq(auditEvents.actorKind, q.actorKind));
  if (q.actor) {
    let actorId = q.actor.toLowerCase();
    if (!UUID_RE.test(actorId)) {
      // An email: resolved first, so the filter is an equality that audit_actor_at_idx serves.
      const [u] = await db
        .select({ id: users.id })
        .from(users)
        .where(sql`lower(${users.email}) = ${actorId}`);
      if (!u) return { rows: [], nextCursor: null };
      actorId = u.id;
    }
    conds.push(eq(auditEvents.actorId, actorId));
  }
  if (q.targetKind) conds.push(eq(auditEvents.targetKind, q.targetKind));
  if (q.targetId) conds.push(eq(auditEvents.targetId, q.targetId));
  if (q.from) conds.push(gte(auditEvents.at, q.from));
  if (q.to) conds.push(lt(auditEvents.at, q.to));
  if (q.cursor !== undefined) {
    const cursorAt = sql`(SELECT c.at FROM ${auditEvents} c WHERE c.id = ${q.cursor})`;
    // `at <= x` alone can use the index on `at`; the OR breaks ties on the same instant by id.
    conds.push(
      sql`${auditEvents.at} <= ${cursorAt} AND (${auditEvents.at} < ${cursorAt} OR ${auditEvents.id} < ${q.cursor})`,
    );
  }
  const actorUser = alias(users, "actor_user");
  const rows = await db
    .select({
      id: auditEvents.id,
      at: auditEvents.at,
      actorKind: auditEvents.actorKind,
      actorId: auditEvents.actorId,
      actorEmail: actorUser.email,
      actorName: actorUser.name,
      action: auditEvents.action,
      targetKind: auditEvents.targetKind,
      targetId: auditEvents.targetId,
      fromState: auditEvents.fromState,
      toState: auditEvents.toState,
      details: auditEvents.details,
      ip: auditEvents.ip,
    })
    .from(auditEvents)
    .leftJoin(
      actorUser,
      // CASE: only user actors' ids are cast, so the users primary key serves the join.
      sql`${actorUser.id} = CASE WHEN ${auditEvents.actorKind} = 'user' THEN ${auditEvents.actorId}::uuid END`,
    )
    .where(conds.length ? and(...conds) : undefined)
    .orderBy(desc(auditEvents.at), desc(auditEvents.id))
    .limit(q.limit + 1);
  const page = rows.slice(0, q.limit);
  return {
    rows: page.map((r) => ({ ...r, details: redactDetails(r.details) as Record<string, unknown> })),
    nextCursor: rows.length > q.limit ? (page.at(-1)?.id ?? null) : null,
  };
}
