import { randomUUID } from "node:crypto";
import { revokeAgentTokens } from "../../server/auth/agent-tokens";
import { createEnrollmentToken } from "../../server/auth/enrollment";
import type { Db } from "../../server/db/client";
import { fleetGroups, groupMembers, groups, type Vm } from "../../server/db/schema";
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
] as const;
export type Principal = (typeof PRINCIPALS)[number];

/** How each principal authenticates with `apiClient` (x-test-user) or a bearer token. */
export type PrincipalAuth = { userId?: string; authorization?: string };

/**
 * Users, groups, fleets, VMs, agent and enrollment tokens for every principal, and the ids the
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
    },
  };
}

/** Which principals a tier lets in. Everything else must be refused with 401 or 403. */
export const ALLOWED: Record<Tier, readonly Principal[]> = {
  public: PRINCIPALS,
  researcher: ["researcher", "researcher of another group", "admin"],
  admin: ["admin"],
  // Token management: a signed-in admin only (these principals carry no API tokens).
  adminSession: ["admin"],
  agent: ["agent of this VM"],
  enrollment: ["enrollment token"],
};
