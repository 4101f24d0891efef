import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { revokeAgentTokens } from "../../server/auth/agent-tokens";
import { type Vm, vms } from "../../server/db/schema";
import { createTestDatabase, type TestDatabase } from "../db";
import { heartbeatInput as heartbeat, makeAgent, makeFleet, makeUser, makeVms } from "../fixtures";
import { apiClient, tableCounts } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let vmA: Vm;
let vmB: Vm;
let tokenA: string;
let tokenB: string;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  const fleet = await makeFleet(t.db, { gpuCount: 0 });
  [vmA, vmB] = (await makeVms(t.db, fleet, 2, "ready")) as [Vm, Vm];
  tokenA = await makeAgent(t.db, vmA);
  tokenB = await makeAgent(t.db, vmB);
});
afterAll(() => t.drop());

async function expectRefused(authorization: string | undefined, vmId: string, status: number) {
  const before = await tableCounts(t.db);
  const [vmBefore] = await t.db.select().from(vms).where(eq(vms.id, vmId));
  const res = await api.mutate("agent.heartbeat", heartbeat(vmId), { authorization });
  expect(res.status).toBe(status);
  expect(res.data).toBeUndefined();
  expect(await tableCounts(t.db)).toEqual(before);
  const [vmAfter] = await t.db.select().from(vms).where(eq(vms.id, vmId));
  expect(vmAfter).toEqual(vmBefore);
  return res;
}

describe("agent authentication", () => {
  it("accepts the VM's own token", async () => {
    const res = await api.mutate("agent.heartbeat", heartbeat(vmA.id), {
      authorization: `Bearer ${tokenA}`,
    });
    expect(res.status).toBe(200);
    expect(res.data).toMatchObject({ vmId: vmA.id, state: "ready", commands: [] });
  });

  it("refuses a missing token with 401", async () => {
    const res = await expectRefused(undefined, vmA.id, 401);
    expect(res.error?.message).toBe("Agent token missing.");
  });

  it("refuses a wrong token with 401", async () => {
    const forged = `${tokenA.slice(0, -4)}AAAA`;
    await expectRefused(`Bearer ${forged}`, vmA.id, 401);
    await expectRefused("Bearer not-a-token", vmA.id, 401);
  });

  it("refuses a non-bearer scheme with 401", async () => {
    await expectRefused(`Basic ${Buffer.from(`x:${tokenA}`).toString("base64")}`, vmA.id, 401);
    await expectRefused(`Token ${tokenA}`, vmA.id, 401);
    await expectRefused(tokenA, vmA.id, 401);
  });

  it("refuses VM A's token acting for VM B with 403", async () => {
    const res = await expectRefused(`Bearer ${tokenA}`, vmB.id, 403);
    expect(res.error?.message).toBe("This token belongs to a different VM.");
    // ...on every agent procedure.
    for (const [type, path, input] of [
      [
        "mutation",
        "agent.register",
        {
          vmId: vmB.id,
          bootId: "b",
          hostname: "h",
          agentVersion: "1",
          protocolVersion: 1,
          gpus: [],
          health: { healthy: true, reasons: [] },
        },
      ],
      [
        "mutation",
        "agent.ack",
        { vmId: vmB.id, type: "wipe", assignmentId: crypto.randomUUID(), ok: true },
      ],
      ["query", "agent.poll", { vmId: vmB.id, waitMs: 0 }],
    ] as const) {
      const r =
        type === "query"
          ? await api.query(path, input, { authorization: `Bearer ${tokenA}` })
          : await api.mutate(path, input, { authorization: `Bearer ${tokenA}` });
      expect(r.status, path).toBe(403);
    }
  });

  it("refuses a revoked token with 401", async () => {
    await revokeAgentTokens(t.db, vmB.id);
    await expectRefused(`Bearer ${tokenB}`, vmB.id, 401);
  });

  it("a researcher session cannot call agent procedures", async () => {
    const user = await makeUser(t.db, "admin");
    const res = await api.mutate("agent.heartbeat", heartbeat(vmA.id), { userId: user.id });
    expect(res.status).toBe(401);
  });
});
