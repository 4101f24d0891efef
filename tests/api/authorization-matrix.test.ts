import { randomUUID } from "node:crypto";
import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { revokeAgentTokens } from "../../server/auth/agent-tokens";
import { createApiToken, revokeApiToken } from "../../server/auth/api-tokens";
import { createEnrollmentToken } from "../../server/auth/enrollment";
import {
  apiTokens,
  fleetGroups,
  groupMembers,
  groups,
  users,
  type Vm,
} from "../../server/db/schema";
import { systemActor } from "../../server/domain/vm-state";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeAgent, makeFleet, makeUser, makeVms } from "../fixtures";
import { apiClient, tableCounts } from "./harness";
import { ACCESS, allProcedures, SAMPLE_INPUT, type Tier, type World } from "./procedures";

/**
 * Every procedure of the router × every kind of caller → allowed or denied. Generated from the
 * router itself: a procedure without an ACCESS tier or a SAMPLE_INPUT fails here.
 */
const PRINCIPALS = [
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
type Principal = (typeof PRINCIPALS)[number];

/** Which principals a tier lets in. Everything else must be refused with 401 or 403. */
const ALLOWED: Record<Tier, readonly Principal[]> = {
  public: PRINCIPALS,
  researcher: ["researcher", "researcher of another group", "admin", "API token (admin)"],
  admin: ["admin", "API token (admin)"],
  adminSession: ["admin"],
  agent: ["agent of this VM"],
  enrollment: ["enrollment token"],
};

/** A read-only API token acts as its admin for queries, and never for a change. */
function allowed(tier: Tier, type: string, who: Principal): boolean {
  if (who === "API token (read-only)") {
    return type === "query" && ALLOWED[tier].includes("API token (admin)");
  }
  return ALLOWED[tier].includes(who);
}

/** Row-level exceptions: the sample claim names a fleet reserved for the first researcher's group. */
const EXCEPTIONS: Record<string, Partial<Record<Principal, "deny">>> = {
  "vm.claim": { "researcher of another group": "deny" },
};

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let world: World;
const auth = {} as Record<Principal, { userId?: string; authorization?: string }>;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  const researcher = await makeUser(t.db, "researcher");
  const other = await makeUser(t.db, "researcher");
  const admin = await makeUser(t.db, "admin");
  const target = await makeUser(t.db, "researcher");
  const [g, h, spare] = await t.db
    .insert(groups)
    .values([{ name: "gpu-course" }, { name: "other-lab" }, { name: "spare" }])
    .returning();
  if (!g || !h || !spare) throw new Error("groups");
  await t.db.insert(groupMembers).values([
    { groupId: g.id, userId: researcher.id },
    { groupId: h.id, userId: other.id },
  ]);
  const open = await makeFleet(t.db);
  const restricted = await makeFleet(t.db, { instanceType: "p4d.24xlarge" });
  await t.db.insert(fleetGroups).values({ fleetId: restricted.id, groupId: g.id });
  await makeVms(t.db, restricted, 3, "ready");
  const byo = await makeFleet(t.db, { driver: "byo" });
  const [vmA, vmB, vmC] = (await makeVms(t.db, open, 3, "ready")) as [Vm, Vm, Vm];
  const tokenA = await makeAgent(t.db, vmA);
  const tokenB = await makeAgent(t.db, vmB);
  const tokenC = await makeAgent(t.db, vmC);
  await revokeAgentTokens(t.db, vmC.id);
  const enroll = await createEnrollmentToken(t.db, {
    fleetId: byo.id,
    maxUses: 100,
    expiresInS: 3600,
    actor: systemActor,
  });
  const spareToken = await createEnrollmentToken(t.db, {
    fleetId: byo.id,
    maxUses: 1,
    expiresInS: 3600,
    actor: systemActor,
  });
  const adminActor = { kind: "user" as const, id: admin.id, ip: null };
  const apiToken = (userId: string, scope: "read" | "admin") =>
    createApiToken(t.db, { userId, name: scope, scope, expiresInDays: 30, actor: adminActor });
  const readToken = await apiToken(admin.id, "read");
  const adminToken = await apiToken(admin.id, "admin");
  const revokedToken = await apiToken(admin.id, "admin");
  await revokeApiToken(t.db, { userId: admin.id, id: revokedToken.id, actor: adminActor });
  const expiredToken = await apiToken(admin.id, "admin");
  await t.db
    .update(apiTokens)
    .set({ expiresAt: sql`now() - interval '1 second'` })
    .where(eq(apiTokens.id, expiredToken.id));
  const demoted = await makeUser(t.db, "admin");
  const demotedToken = await apiToken(demoted.id, "admin");
  await t.db.update(users).set({ role: "researcher" }).where(eq(users.id, demoted.id));
  world = {
    vmId: vmA.id,
    restrictedFleetId: restricted.id,
    byoFleetId: byo.id,
    groupId: h.id,
    userId: target.id,
    spareGroupId: spare.id,
    spareEnrollmentTokenId: spareToken.id,
    unique: () => randomUUID().slice(0, 8),
  };
  Object.assign(auth, {
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
  });
});
afterAll(() => t.drop());

const procedures = allProcedures();

describe("authorization matrix", () => {
  it("has a tier and a sample input for every procedure of the router, and nothing else", () => {
    const paths = procedures.map((p) => p.path).sort();
    expect(Object.keys(ACCESS).sort()).toEqual(paths);
    expect(Object.keys(SAMPLE_INPUT).sort()).toEqual(paths);
  });

  for (const { path, type } of procedures) {
    it(`${path}`, async () => {
      const tier = ACCESS[path];
      const sample = SAMPLE_INPUT[path];
      expect(tier, `${path} has no tier in tests/api/procedures.ts`).toBeDefined();
      expect(sample, `${path} has no sample input in tests/api/procedures.ts`).toBeDefined();
      if (!tier || !sample) return;
      const outcome: Record<string, string> = {};
      const expected: Record<string, string> = {};
      for (const who of PRINCIPALS) {
        const ok = allowed(tier, type, who) && EXCEPTIONS[path]?.[who] !== "deny";
        expected[who] = ok ? "allow" : "deny";
        const before = await tableCounts(t.db);
        const input = sample(world);
        const res =
          type === "query"
            ? await api.query(path, input, auth[who])
            : await api.mutate(path, input, auth[who]);
        expect(res.status, `${path} as ${who}: ${JSON.stringify(res.error)}`).toBeLessThan(500);
        const denied = res.status === 401 || res.status === 403;
        outcome[who] = denied ? "deny" : "allow";
        if (denied) {
          expect(res.data, `${path} as ${who} returned data`).toBeUndefined();
          expect(await tableCounts(t.db), `${path} as ${who} wrote`).toEqual(before);
        }
      }
      expect(outcome).toEqual(expected);
    });
  }
});
