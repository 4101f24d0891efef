import { randomUUID } from "node:crypto";
import { eq, sql } from "drizzle-orm";
import { revokeAgentTokens } from "../../server/auth/agent-tokens";
import { createApiToken, revokeApiToken } from "../../server/auth/api-tokens";
import { createEnrollmentToken } from "../../server/auth/enrollment";
import type { Db } from "../../server/db/client";
import {
  apiTokens,
  fleetGroups,
  groupMembers,
  groups,
  users,
  type Vm,
} from "../../server/db/schema";
import { systemActor } from "../../server/domain/vm-state";
import { makeAgent, makeFleet, makeUser, makeVms } from "../fixtures";
import type { Tier, World } from "./procedures";

/** Every kind of caller the API tests act as. */
export const PRINCIPALS = [
  "anonymous",
  "researcher",
  "researcher of another group",
  "admin",
  "agent of this VM",
  "agent of another VM",
  "revoked agent",
  "enrollment token",
  "API token (read-only)",
  "API token (admin)",
  "revoked API token",
  "expired API token",
  "API token of a demoted admin",
] as const;
export type Principal = (typeof PRINCIPALS)[number];

/** How each principal authenticates with `apiClient` (x-test-user) or a bearer token. */
export type PrincipalAuth = { userId?: string; authorization?: string };

/**
 * Users, groups, fleets, VMs, agent, enrollment and API tokens for every principal, and the ids the
 * sample inputs of tests/api/procedures.ts refer to.
 */
export async function makeWorld(
  db: Db,
): Promise<{ world: World; auth: Record<Principal, PrincipalAuth> }> {
  const researcher = await makeUser(db, "researcher");
  const other = await makeUser(db, "researcher");
  const admin = await makeUser(db, "admin");
  const target = await makeUser(db, "researcher");
  const [g, h, spare] = await db
    .insert(groups)
    .values([{ name: "gpu-course" }, { name: "other-lab" }, { name: "spare" }])
    .returning();
  if (!g || !h || !spare) throw new Error("groups");
  await db.insert(groupMembers).values([
    { groupId: g.id, userId: researcher.id },
    { groupId: h.id, userId: other.id },
  ]);
  const open = await makeFleet(db);
  const restricted = await makeFleet(db, { instanceType: "p4d.24xlarge" });
  await db.insert(fleetGroups).values({ fleetId: restricted.id, groupId: g.id });
  await makeVms(db, restricted, 3, "ready");
  const byo = await makeFleet(db, { driver: "byo" });
  const [vmA, vmB, vmC] = (await makeVms(db, open, 3, "ready")) as [Vm, Vm, Vm];
  const tokenA = await makeAgent(db, vmA);
  const tokenB = await makeAgent(db, vmB);
  const tokenC = await makeAgent(db, vmC);
  await revokeAgentTokens(db, vmC.id);
  const enroll = await createEnrollmentToken(db, {
    fleetId: byo.id,
    maxUses: 100,
    expiresInS: 3600,
    actor: systemActor,
  });
  const spareToken = await createEnrollmentToken(db, {
    fleetId: byo.id,
    maxUses: 1,
    expiresInS: 3600,
    actor: systemActor,
  });
  const adminActor = { kind: "user" as const, id: admin.id, ip: null };
  const apiToken = (userId: string, scope: "read" | "admin") =>
    createApiToken(db, { userId, name: scope, scope, expiresInDays: 30, actor: adminActor });
  const readToken = await apiToken(admin.id, "read");
  const adminToken = await apiToken(admin.id, "admin");
  const revokedToken = await apiToken(admin.id, "admin");
  await revokeApiToken(db, { userId: admin.id, id: revokedToken.id, actor: adminActor });
  const expiredToken = await apiToken(admin.id, "admin");
  await db
    .update(apiTokens)
    .set({ expiresAt: sql`now() - interval '1 second'` })
    .where(eq(apiTokens.id, expiredToken.id));
  const demoted = await makeUser(db, "admin");
  const demotedToken = await apiToken(demoted.id, "admin");
  await db.update(users).set({ role: "researcher" }).where(eq(users.id, demoted.id));
  return {
    world: {
      vmId: vmA.id,
      restrictedFleetId: restricted.id,
      byoFleetId: byo.id,
      groupId: h.id,
      userId: target.id,
      spareGroupId: spare.id,
      spareEnrollmentTokenId: spareToken.id,
      unique: () => randomUUID().slice(0, 8),
    },
    auth: {
      anonymous: {},
      researcher: { userId: researcher.id },
      "researcher of another group": { userId: other.id },
      admin: { userId: admin.id },
      "agent of this VM": { authorization: `Bearer ${tokenA}` },
      "agent of another VM": { authorization: `Bearer ${tokenB}` },
      "revoked agent": { authorization: `Bearer ${tokenC}` },
      "enrollment token": { authorization: `Bearer ${enroll.token}` },
      "API token (read-only)": { authorization: `Bearer ${readToken.token}` },
      "API token (admin)": { authorization: `Bearer ${adminToken.token}` },
      "revoked API token": { authorization: `Bearer ${revokedToken.token}` },
      "expired API token": { authorization: `Bearer ${expiredToken.token}` },
      "API token of a demoted admin": { authorization: `Bearer ${demotedToken.token}` },
    },
  };
}

/**
 * Which principals a tier lets in. Everything else must be refused with 401 or 403. A read-only
 * API token is not listed: see `allowed`.
 */
export const ALLOWED: Record<Tier, readonly Principal[]> = {
  public: PRINCIPALS,
  researcher: ["researcher", "researcher of another group", "admin", "API token (admin)"],
  admin: ["admin", "API token (admin)"],
  // Token management: a signed-in admin only, never through an API token.
  adminSession: ["admin"],
  agent: ["agent of this VM"],
  enrollment: ["enrollment token"],
};

/** Whether `who` may call a procedure of `tier`: a read-only API token acts as its admin for queries only. */
export function allowed(tier: Tier, type: string, who: Principal): boolean {
  if (who === "API token (read-only)") {
    return type === "query" && ALLOWED[tier].includes("API token (admin)");
  }
  return ALLOWED[tier].includes(who);
}
