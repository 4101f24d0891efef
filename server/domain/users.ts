import { asc, count, eq, ilike, or, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { auditEvents, groupMembers, groups, type UserRole, users } from "../db/schema";
import { audit } from "./audit";
import { DomainError } from "./errors";
import type { Actor } from "./vm-state";

// Qualified by hand: drizzle renders `users.id` as a bare "id" in a one-table select, which
// inside a subquery binds to the subquery's own table (groups.id, audit_events.id).
const userId = sql.raw(`"users"."id"`);

/** Users with their groups, for the admin page. */
export async function listUsers(db: DbOrTx, q: { search?: string; limit: number; offset: number }) {
  const where = q.search
    ? or(
        ilike(users.email, `%${q.search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`),
        ilike(users.name, `%${q.search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`),
      )
    : undefined;
  const [rows, [total]] = await Promise.all([
    db
      .select({
        id: users.id,
        name: users.name,
        email: users.email,
        role: users.role,
        createdAt: users.createdAt,
        groups: sql<string[]>`coalesce((
          SELECT array_agg(g.name ORDER BY g.name) FROM ${groupMembers} gm
          JOIN ${groups} g ON g.id = gm.group_id WHERE gm.user_id = ${userId}), '{}')`,
        groupIds: sql<string[]>`coalesce((
          SELECT array_agg(gm.group_id::text) FROM ${groupMembers} gm
          WHERE gm.user_id = ${userId}), '{}')`,
        // Sign-ins are audited (every provider); audit_target_idx answers this per user.
        lastSignInAt: sql<Date | null>`(SELECT max(a.at) FROM ${auditEvents} a
          WHERE a.target_kind = 'user' AND a.target_id = ${userId}::text
          AND a.action = 'auth.sign_in')`.mapWith(users.createdAt),
      })
      .from(users)
      .where(where)
      .orderBy(asc(users.email))
      .limit(q.limit)
      .offset(q.offset),
    db.select({ n: count() }).from(users).where(where),
  ]);
  return { rows, total: total?.n ?? 0 };
}

/**
 * Promotes or demotes a user. Every admin row is locked first, so two admins demoting each other
 * at the same moment cannot leave LabLink without an admin: the second sees the first's change.
 */
export async function setUserRole(
  db: DbOrTx,
  req: { userId: string; role: UserRole; actor: Actor },
) {
  return db.transaction(async (tx) => {
    const admins = await tx
      .select({ id: users.id })
      .from(users)
      .where(eq(users.role, "admin"))
      .for("update");
    const [target] = await tx
      .select({ id: users.id, role: users.role, email: users.email })
      .from(users)
      .where(eq(users.id, req.userId))
      .for("update");
    if (!target) throw new DomainError("NOT_FOUND", "No such user.");
    if (target.role === req.role) return { id: target.id, role: target.role, changed: false };
    if (req.role !== "admin" && admins.length <= 1) {
      throw new DomainError(
        "STATE_CONFLICT",
        "This is the last admin. Promote someone else before demoting this account.",
      );
    }
    await tx.update(users).set({ role: req.role }).where(eq(users.id, target.id));
    await audit(
      tx,
      req.actor,
      req.role === "admin" ? "user.promote" : "user.demote",
      { kind: "user", id: target.id },
      { from: target.role, to: req.role },
    );
    return { id: target.id, role: req.role, changed: true };
  });
}

/** Parses an `ADMIN_EMAILS`-style list: comma or whitespace separated, case-insensitive. */
export function parseEmailList(value: string | undefined): string[] {
  return (value ?? "")
    .split(/[\s,]+/)
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

/**
 * Makes a user admin when their (verified) email is on the bootstrap list. Only promotes: removing
 * an address from the list does not demote anyone (admins do that in the app).
 */
export async function applyAdminBootstrap(
  db: DbOrTx,
  user: { id: string; email: string | null | undefined },
  adminEmails: readonly string[],
): Promise<boolean> {
  const email = user.email?.toLowerCase();
  if (!email || !adminEmails.includes(email)) return false;
  const updated = await db
    .update(users)
    .set({ role: "admin" })
    .where(sql`${users.id} = ${user.id} AND ${users.role} <> 'admin'`)
    .returning({ id: users.id });
  if (updated.length > 0) {
    await audit(
      db,
      { kind: "system", id: null },
      "user.promote",
      { kind: "user", id: user.id },
      {
        reason: "ADMIN_EMAILS",
      },
    );
  }
  return updated.length > 0;
}

/** Whether an email may sign in under an allow-list of domains and addresses (empty: anyone). */
export function emailAllowed(email: string | null | undefined, allow: readonly string[]): boolean {
  if (allow.length === 0) return true;
  const e = email?.trim().toLowerCase();
  if (!e?.includes("@")) return false;
  const domain = e.slice(e.lastIndexOf("@") + 1);
  return allow.some((entry) =>
    entry.startsWith("@") || !entry.includes("@")
      ? entry.replace(/^@/, "") === domain
      : entry === e,
  );
}
