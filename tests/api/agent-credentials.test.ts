import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  credentialLookupStats,
  revokeAgentTokens,
  verifyAgentToken,
} from "../../server/auth/agent-tokens";
import { agentCredentials, type Fleet, type users, type Vm, vms } from "../../server/db/schema";
import { transition } from "../../server/domain/vm-state";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeAgent, makeFleet, makeUser, makeVms, tokenSecret } from "../fixtures";
import { apiClient, tableCounts } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let admin: typeof users.$inferSelect;
let byo: Fleet;

const register = (vmId: string, extra: object = {}) => ({
  vmId,
  bootId: "boot-1",
  hostname: "gpu-box",
  agentVersion: "0.1.0",
  protocolVersion: 1,
  gpus: [],
  health: { healthy: true, reasons: [] },
  ...extra,
});
const poll = (vmId: string) => ({ vmId, waitMs: 0 });
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** Time passes: every rotated-out token's grace period ends now. */
const endGracePeriods = () =>
  t.db
    .update(agentCredentials)
    .set({ revokedAt: sql`now() - interval '1 second'` })
    .where(sql`${agentCredentials.revokedAt} > now()`);

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  admin = await makeUser(t.db, "admin");
  byo = await makeFleet(t.db, { driver: "byo", gpuCount: 0 });
});
afterAll(() => t.drop());

describe("credential rotation", () => {
  it("register with rotateCredential hands out a new token; the old one works until the new one is used once", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const [vm] = (await makeVms(t.db, fleet, 1, "provisioning", { bootId: null })) as [Vm];
    const first = await makeAgent(t.db, vm);
    const res = await api.mutate(
      "agent.register",
      register(vm.id, { rotateCredential: true }),
      bearer(first),
    );
    expect(res.status).toBe(200);
    const second = (res.data as { credential?: string }).credential;
    expect(second).toMatch(/^lla_[0-9a-f]{32}_/);
    expect(second).not.toBe(first);
    // A request in flight with the old token is not lost...
    expect((await api.query("agent.poll", poll(vm.id), bearer(first))).status).toBe(200);
    // ...until the new token is used: from then on only the new one works.
    expect((await api.query("agent.poll", poll(vm.id), bearer(second as string))).status).toBe(200);
    expect((await api.query("agent.poll", poll(vm.id), bearer(first))).status).toBe(401);
    expect((await api.query("agent.poll", poll(vm.id), bearer(second as string))).status).toBe(200);
  });

  it("a rotation reply lost on the way does not lock the agent out: the old token outlives any grace period and the agent can ask again", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const [vm] = (await makeVms(t.db, fleet, 1, "provisioning", { bootId: null })) as [Vm];
    const first = await makeAgent(t.db, vm);
    const lost = await api.mutate(
      "agent.register",
      register(vm.id, { rotateCredential: true }),
      bearer(first),
    );
    const lostToken = (lost.data as { credential: string }).credential;
    // The reply never arrives; time passes well beyond any grace period.
    await endGracePeriods();
    await t.db.execute(
      sql`UPDATE agent_credentials SET created_at = created_at - interval '1 day' WHERE vm_id = ${vm.id}`,
    );
    expect((await api.query("agent.poll", poll(vm.id), bearer(first))).status).toBe(200);
    const again = await api.mutate(
      "agent.register",
      register(vm.id, { rotateCredential: true }),
      bearer(first),
    );
    expect(again.status).toBe(200);
    const delivered = (again.data as { credential: string }).credential;
    // The token of the lost reply never reached the agent: it is dead, so it cannot leak later.
    expect((await api.query("agent.poll", poll(vm.id), bearer(lostToken))).status).toBe(401);
    expect((await api.query("agent.poll", poll(vm.id), bearer(first))).status).toBe(200);
    expect((await api.query("agent.poll", poll(vm.id), bearer(delivered))).status).toBe(200);
    expect((await api.query("agent.poll", poll(vm.id), bearer(first))).status).toBe(401);
    const live = await t.db
      .select()
      .from(agentCredentials)
      .where(sql`${agentCredentials.vmId} = ${vm.id} AND revoked_at IS NULL`);
    expect(live).toHaveLength(1);
  });

  it("agent.rotate before a new assignment: the token of the last hold dies once the new one is used", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const [vm] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    const held = await makeAgent(t.db, vm);
    const assignmentId = "00000000-0000-4000-8000-00000000000a";
    const res = await api.mutate("agent.rotate", { vmId: vm.id, assignmentId }, bearer(held));
    expect(res.status).toBe(200);
    const fresh = (res.data as { credential: string }).credential;
    expect(fresh).toMatch(/^lla_[0-9a-f]{32}_/);
    expect((await api.query("agent.poll", poll(vm.id), bearer(fresh))).status).toBe(200);
    expect((await api.query("agent.poll", poll(vm.id), bearer(held))).status).toBe(401);
    // Another VM's token cannot rotate this VM's.
    const [other] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    const otherToken = await makeAgent(t.db, other);
    const cross = await api.mutate(
      "agent.rotate",
      { vmId: vm.id, assignmentId },
      bearer(otherToken),
    );
    expect(cross.status).toBe(403);
    const [audit] = await t.db.execute<{ details: unknown }>(
      sql`SELECT details FROM audit_events WHERE action = 'agent.rotate_credential' AND target_id = ${vm.id}`,
    );
    expect(audit?.details).toEqual({ reason: "assignment", assignmentId });
  });

  it("without rotateCredential the reply carries no credential", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const [vm] = (await makeVms(t.db, fleet, 1, "provisioning", { bootId: null })) as [Vm];
    const token = await makeAgent(t.db, vm);
    const res = await api.mutate("agent.register", register(vm.id), bearer(token));
    expect(res.status).toBe(200);
    expect(res.data).not.toHaveProperty("credential");
  });

  it("terminating a VM revokes its tokens in the same transaction", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const [vm] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    const token = await makeAgent(t.db, vm);
    const actor = { kind: "system" as const, id: null };
    await transition(t.db, { vmId: vm.id, to: "terminating", actor, action: "test" });
    // While terminating the agent still hears "shutdown".
    const during = await api.query("agent.poll", poll(vm.id), bearer(token));
    expect(during.data).toMatchObject({ commands: [{ type: "shutdown" }] });
    await transition(t.db, { vmId: vm.id, to: "terminated", actor, action: "test" });
    expect((await api.query("agent.poll", poll(vm.id), bearer(token))).status).toBe(401);
  });
});

describe("token lookups made together", () => {
  it("share one statement yet each gets its own VM, and revoked, forged and unknown tokens get null", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const list = await makeVms(t.db, fleet, 40, "ready");
    const tokens = await Promise.all(list.map((vm) => makeAgent(t.db, vm)));
    const revoked = tokens.slice(30);
    for (const vm of list.slice(30)) await revokeAgentTokens(t.db, vm.id);
    const forged = tokens.slice(0, 5).map((tok) => `${tok.slice(0, -4)}AAAA`);
    const unknown = `lla_${"f".repeat(32)}_${"A".repeat(43)}`;
    // Each token twice, all in the same turn of the event loop.
    const presented = [...tokens, ...tokens, ...forged, unknown];
    const before = credentialLookupStats(t.db);
    const results = await Promise.all(presented.map((tok) => verifyAgentToken(t.db, tok)));
    const after = credentialLookupStats(t.db);
    expect(after.lookups - before.lookups).toBe(presented.length);
    expect(after.statements - before.statements).toBe(1);
    presented.forEach((tok, i) => {
      const k = tokens.indexOf(tok);
      const expected = k >= 0 && !revoked.includes(tok) ? list[k]?.id : undefined;
      expect(results[i]?.vmId, `token ${i}`).toBe(expected);
      if (expected) expect(results[i]?.vm.id).toBe(expected);
    });
    expect(results.filter(Boolean)).toHaveLength(60);
  });

  it("a revocation committed before the lookup is seen by it", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const [vm] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    const token = await makeAgent(t.db, vm);
    expect((await verifyAgentToken(t.db, token))?.vmId).toBe(vm.id);
    await revokeAgentTokens(t.db, vm.id);
    expect(await verifyAgentToken(t.db, token)).toBeNull();
  });
});

describe("enrollment tokens", () => {
  const enroll = (token: string, hostname = "lab-ws-1", ip?: string) =>
    api.mutate(
      "agent.enroll",
      { hostname, agentVersion: "0.1.0", protocolVersion: 1 },
      { ...bearer(token), ip },
    );

  it("an admin creates one for a byo fleet; an agent exchanges it once for its own VM and token", async () => {
    const created = await api.mutate(
      "enrollment.create",
      { fleetId: byo.id, label: "Alice's workstation" },
      { userId: admin.id },
    );
    expect(created.status).toBe(200);
    const { token, id } = created.data as { token: string; id: string };
    expect(token).toMatch(/^lle_/);
    // Stored hashed: the secret part is nowhere in the table.
    const secret = tokenSecret(token);
    const dump = JSON.stringify(await t.db.execute(sql`SELECT * FROM enrollment_tokens`));
    expect(dump).not.toContain(secret);
    // Listing never shows it either.
    const list = await api.query("enrollment.list", { fleetId: byo.id }, { userId: admin.id });
    expect(JSON.stringify(list.data)).not.toContain(secret);
    expect(list.data).toEqual([expect.objectContaining({ id, uses: 0, maxUses: 1, usable: true })]);

    const res = await enroll(token, "Lab WS 1.local");
    expect(res.status).toBe(200);
    const {
      vmId,
      token: agentToken,
      name,
    } = res.data as {
      vmId: string;
      token: string;
      name: string;
    };
    expect(name).toBe("lab-ws-1-local");
    const [vm] = await t.db.select().from(vms).where(eq(vms.id, vmId));
    expect(vm).toMatchObject({ fleetId: byo.id, state: "provisioning" });
    // The new token works for the new VM: registering brings it into the pool.
    const reg = await api.mutate("agent.register", register(vmId), bearer(agentToken));
    expect(reg.data).toMatchObject({ state: "ready" });

    // Single use: the second exchange is refused and creates nothing.
    const before = await tableCounts(t.db);
    const again = await enroll(token);
    expect(again.status).toBe(401);
    expect(await tableCounts(t.db)).toEqual(before);
  });

  it("an N-use token serves N machines, and N racing agents cannot spend N+1", async () => {
    const { token } = (
      await api.mutate(
        "enrollment.create",
        { fleetId: byo.id, maxUses: 3 },
        {
          userId: admin.id,
        },
      )
    ).data as { token: string };
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => enroll(token, `box-${i}`, `198.51.100.${i}`)),
    );
    const statuses = results.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 200, 200, 401, 401, 401]);
  });

  it("an expired token is refused", async () => {
    const { token, id } = (
      await api.mutate("enrollment.create", { fleetId: byo.id }, { userId: admin.id })
    ).data as { token: string; id: string };
    await t.db.execute(
      sql`UPDATE enrollment_tokens SET expires_at = now() - interval '1 second' WHERE id = ${id}`,
    );
    const res = await enroll(token);
    expect(res.status).toBe(401);
    expect(res.error?.message).toMatch(/used up, expired or revoked/);
  });

  it("a revoked token is refused", async () => {
    const { token, id } = (
      await api.mutate("enrollment.create", { fleetId: byo.id }, { userId: admin.id })
    ).data as { token: string; id: string };
    expect((await api.mutate("enrollment.revoke", { id }, { userId: admin.id })).status).toBe(200);
    expect((await enroll(token)).status).toBe(401);
  });

  it("a forged token is refused, and tokens are only for byo fleets", async () => {
    const { token } = (
      await api.mutate("enrollment.create", { fleetId: byo.id }, { userId: admin.id })
    ).data as { token: string };
    expect((await enroll(`${token.slice(0, -4)}AAAA`)).status).toBe(401);
    const cloud = await makeFleet(t.db);
    const res = await api.mutate("enrollment.create", { fleetId: cloud.id }, { userId: admin.id });
    expect(res.status).toBe(400);
  });
});
