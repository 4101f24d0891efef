import { type AnyColumn, and, asc, eq, inArray, ne, type SQL, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { fleetGroups, fleets, groupMembers, groups, type UserRole, users } from "../db/schema";
import { audit } from "./audit";
import { DomainError } from "./errors";
import type { Actor } from "./vm-state";

/** Who is looking at or claiming from the pool; null for anonymous visitors. */
export type Viewer = { userId: string; role: UserRole } | null;

/**
 * SQL condition on a fleet id column: the fleets this viewer may claim from. A fleet without
 * group restrictions is open to every signed-in researcher (and shown to anonymous visitors as
 * counts); a restricted fleet only to members of one of its groups. Admins see and may claim all.
 */
export function fleetAccessible(fleetIdColumn: SQL | AnyColumn, viewer: Viewer): SQL {
  if (viewer?.role === "admin") return sql`true`;
  const open = sql`NOT EXISTS (SELECT 1 FROM ${fleetGroups} fg WHERE fg.fleet_id = ${fleetIdColumn})`;
  if (!viewer) return open;
  return sql`(${open} OR EXISTS (
    SELECT 1 FROM ${fleetGroups} fg JOIN ${groupMembers} gm ON gm.group_id = fg.group_id
    WHERE fg.fleet_id = ${fleetIdColumn} AND gm.user_id = ${viewer.userId}))`;
}

/** Refuses a claim that names a fleet the researcher may not use, saying which groups may. */
export async function assertFleetAccessible(db: DbOrTx, fleetId: string, viewer: Viewer) {
  const [row] = await db
    .select({ ok: fleetAccessible(fleets.id, viewer) })
    .from(fleets)
    .where(eq(fleets.id, fleetId));
  if (!row) throw new DomainError("NOT_FOUND", "No such fleet.");
  if (!row.ok) {
    throw new DomainError(
      "FORBIDDEN",
      "This fleet is reserved for particular groups, and you are not in any of them. Ask your LabLink admin.",
    );
  }
}

export async function listGroups(db: DbOrTx) {
  const rows = await db
    .select({
      id: groups.id,
      name: groups.name,
      description: groups.description,
      createdAt: groups.createdAt,
      // "groups"."id" by hand: in a one-table select drizzle renders ${groups.id} as a bare "id",
      // which inside these subqueries would bind to fleets.id (user.list had the same bug).
      members: sql<number>`(SELECT count(*)::int FROM ${groupMembers} gm WHERE gm.group_id = "groups"."id")`,
      fleets: sql<
        string[]
      >`coalesce((SELECT array_agg(f.name ORDER BY f.name) FROM ${fleetGroups} fg
        JOIN ${fleets} f ON f.id = fg.fleet_id WHERE fg.group_id = "groups"."id"), '{}')`,
    })
    .from(groups)
    .orderBy(asc(groups.name));
  return rows;
}

export async function groupMembersOf(db: DbOrTx, groupId: string) {
  await groupOrThrow(db, groupId);
  return db
    .select({ id: users.id, name: users.name, email: users.email, role: users.role })
    .from(groupMembers)
    .innerJoin(users, eq(users.id, groupMembers.userId))
    .where(eq(groupMembers.groupId, groupId))
    .orderBy(asc(users.email));
}

async function groupOrThrow(db: DbOrTx, groupId: string) {
  const [g] = await db.select().from(groups).where(eq(groups.id, groupId));
  if (!g) throw new DomainError("NOT_FOUND", "No such group.");
  return g;
}

export async function createGroup(
  db: DbOrTx,
  req: { name: string; description?: string; actor: Actor },
) {
  return db.transaction(async (tx) => {
    const [g] = await tx
      .insert(groups)
      .values({ name: req.name, description: req.description ?? null })
      .onConflictDoNothing()
      .returning();
    if (!g) throw new DomainError("ALREADY_EXISTS", `A group named "${req.name}" already exists.`);
    await audit(tx, req.actor, "group.create", { kind: "group", id: g.id }, { name: g.name });
    return g;
  });
}

export async function deleteGroup(db: DbOrTx, req: { groupId: string; actor: Actor }) {
  return db.transaction(async (tx) => {
    const [g] = await tx.delete(groups).where(eq(groups.id, req.groupId)).returning();
    if (!g) throw new DomainError("NOT_FOUND", "No such group.");
    await audit(tx, req.actor, "group.delete", { kind: "group", id: g.id }, { name: g.name });
    return { id: g.id };
  });
}

export async function setMembership(
  db: DbOrTx,
  req: { groupId: string; userId: string; member: boolean; actor: Actor },
) {
  return db.transaction(async (tx) => {
    await groupOrThrow(tx, req.groupId);
    const [u] = await tx.select({ id: users.id }).from(users).where(eq(users.id, req.userId));
    if (!u) throw new DomainError("NOT_FOUND", "No such user.");
    const changed = req.member
      ? await tx
          .insert(groupMembers)
          .values({ groupId: req.groupId, userId: req.userId })
          .onConflictDoNothing()
          .returning()
      : await tx
          .delete(groupMembers)
          .where(and(eq(groupMembers.groupId, req.groupId), eq(groupMembers.userId, req.userId)))
          .returning();
    if (changed.length > 0) {
      await audit(
        tx,
        req.actor,
        req.member ? "group.add_member" : "group.remove_member",
        { kind: "group", id: req.groupId },
        { userId: req.userId },
      );
    }
    return { changed: changed.length > 0 };
  });
}

/** Restricts a fleet to these groups; an empty list opens it to every researcher again. */
export async function setFleetGroups(
  db: DbOrTx,
  req: { fleetId: string; groupIds: string[]; actor: Actor },
) {
  return db.transaction(async (tx) => {
    const [f] = await tx
      .select({ id: fleets.id })
      .from(fleets)
      .where(eq(fleets.id, req.fleetId))
      .for("update");
    if (!f) throw new DomainError("NOT_FOUND", "No such fleet.");
    const ids = [...new Set(req.groupIds)];
    if (ids.length > 0) {
      const found = await tx.select({ id: groups.id }).from(groups).where(inArray(groups.id, ids));
      if (found.length !== ids.length) throw new DomainError("NOT_FOUND", "No such group.");
    }
    await tx.delete(fleetGroups).where(eq(fleetGroups.fleetId, req.fleetId));
    if (ids.length > 0) {
      await tx
        .insert(fleetGroups)
        .values(ids.map((groupId) => ({ fleetId: req.fleetId, groupId })));
    }
    await audit(
      tx,
      req.actor,
      "fleet.set_groups",
      { kind: "fleet", id: req.fleetId },
      {
        groupIds: ids,
      },
    );
    return { fleetId: req.fleetId, groupIds: ids };
  });
}

/**
 * The groups a user belongs to, with the restricted fleets each one opens (their profile page).
 * Fleets open to every researcher are not listed: membership adds nothing there.
 */
export async function groupsOfUser(db: DbOrTx, userId: string) {
  const rows = await db
    .select({
      id: groups.id,
      name: groups.name,
      description: groups.description,
      fleet: fleets.name,
    })
    .from(groupMembers)
    .innerJoin(groups, eq(groups.id, groupMembers.groupId))
    .leftJoin(fleetGroups, eq(fleetGroups.groupId, groups.id))
    .leftJoin(fleets, and(eq(fleets.id, fleetGroups.fleetId), ne(fleets.status, "destroyed")))
    .where(eq(groupMembers.userId, userId))
    .orderBy(groups.name, fleets.name);
  const byId = new Map<
    string,
    { id: string; name: string; description: string | null; fleets: string[] }
  >();
  for (const r of rows) {
    const g = byId.get(r.id) ?? { id: r.id, name: r.name, description: r.description, fleets: [] };
    if (r.fleet) g.fleets.push(r.fleet);
    byId.set(r.id, g);
  }
  return [...byId.values()];
}
