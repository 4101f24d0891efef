import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyAgentToken } from "../../server/auth/agent-tokens";
import { agentCredentials, type Vm, vms } from "../../server/db/schema";
import { claimVm, releaseVm } from "../../server/domain/allocation";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeAgent, makeFleet, makeUser, makeVms, tokenSecret } from "../fixtures";
import { startApiServer } from "../http";

let t: TestDatabase;
let api: Awaited<ReturnType<typeof startApiServer>>;
let child: ChildProcess | undefined;
let output = "";
const dir = mkdtempSync(path.join(os.tmpdir(), "lablink-rotation-"));

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  t = await createTestDatabase();
  api = await startApiServer(t.db, t.sql, 1);
});
afterAll(async () => {
  child?.kill("SIGKILL");
  await api?.close();
  await t?.drop();
});

function startAgent(vm: Vm, tokenFile: string, stateDir: string) {
  const proc = spawn(
    process.execPath,
    ["--import", "tsx", path.resolve(import.meta.dirname, "../../agent/src/main.ts")],
    {
      env: {
        PATH: process.env.PATH,
        NODE_ENV: "test",
        LABLINK_SERVER_URL: api.url,
        LABLINK_AGENT_TOKEN_FILE: tokenFile,
        LABLINK_VM_ID: vm.id,
        LABLINK_SIMULATE_GPU: "NVIDIA A10G:1",
        LABLINK_STATE_DIR: stateDir,
        LABLINK_HEARTBEAT_S: "0.3",
        LABLINK_POLL_WAIT_MS: "1000",
        LOG_LEVEL: "debug",
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  child = proc;
  proc.stdout?.on("data", (d) => {
    output += d;
  });
  proc.stderr?.on("data", (d) => {
    output += d;
  });
  return proc;
}

describe("a real agent with a token file", () => {
  it("takes over the rotated token at registration and keeps working after the old one dies", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 1 });
    const [vm] = (await makeVms(t.db, fleet, 1, "provisioning", { bootId: null })) as [Vm];
    const first = await makeAgent(t.db, vm);
    const tokenFile = path.join(dir, "agent.token");
    writeFileSync(tokenFile, `${first}\n`, { mode: 0o600 });
    startAgent(vm, tokenFile, dir);

    const second = await waitFor("the token file to be rewritten", async () => {
      const now = readFileSync(tokenFile, "utf8").trim();
      return now !== first && now;
    });
    expect(second).toMatch(/^lla_/);
    // The old credential works until the agent uses the new one.
    const creds = await t.db
      .select()
      .from(agentCredentials)
      .where(eq(agentCredentials.vmId, vm.id));
    expect(creds).toHaveLength(2);
    // Whatever grace is left ends: the agent must carry on with the new token alone.
    await t.db
      .update(agentCredentials)
      .set({ revokedAt: sql`now() - interval '1 second'` })
      .where(sql`${agentCredentials.revokedAt} > now()`);
    const mark = new Date();
    await waitFor("heartbeats with the new token", async () => {
      const [row] = await t.db.select().from(vms).where(eq(vms.id, vm.id));
      return row?.state === "ready" && row.lastHeartbeatAt && row.lastHeartbeatAt > mark;
    });
    // Neither token ever reached the agent's log.
    expect(output).toContain("agent token rotated");
    for (const token of [first, second]) {
      expect(output).not.toContain(token);
      expect(output).not.toContain(tokenSecret(token));
    }
  });
});

describe("token rotation on every assignment", () => {
  it("the agent takes a new token before setting up each holder: a token read during one hold is dead for the next, and the file stays 0600", async () => {
    child?.kill("SIGKILL");
    const stateDir = mkdtempSync(path.join(os.tmpdir(), "lablink-rotation-hold-"));
    const fleet = await makeFleet(t.db, { gpuCount: 1 });
    const [vm] = (await makeVms(t.db, fleet, 1, "provisioning", { bootId: null })) as [Vm];
    const tokenFile = path.join(stateDir, "agent.token");
    // Put in place with a careless mode: the agent makes it owner-only.
    writeFileSync(tokenFile, `${await makeAgent(t.db, vm)}\n`, { mode: 0o644 });
    startAgent(vm, tokenFile, stateDir);
    const readToken = () => readFileSync(tokenFile, "utf8").trim();
    const mode = () => statSync(tokenFile).mode & 0o777;
    await waitFor("the VM to be ready", async () => {
      const [row] = await t.db.select().from(vms).where(eq(vms.id, vm.id));
      return row?.state === "ready";
    });
    expect(mode()).toBe(0o600);
    expect(statSync(tokenFile).uid).toBe(process.getuid?.());

    const holds: { assignmentId: string; tokenDuringHold: string }[] = [];
    for (const n of [1, 2]) {
      const user = await makeUser(t.db, "researcher", `holder-${n}`);
      const actor = { kind: "user" as const, id: user.id };
      const { vm: claimed } = await claimVm(t.db, { userId: user.id, fleetId: fleet.id, actor });
      const assignmentId = claimed.assignmentId as string;
      await waitFor(`hold ${n} to be set up`, async () => {
        const [row] = await t.db.select().from(vms).where(eq(vms.id, vm.id));
        return row?.assignmentAckedId === assignmentId;
      });
      // Whoever is root on the VM during this hold can read the token now.
      const tokenDuringHold = readToken();
      expect(mode()).toBe(0o600);
      for (const earlier of holds) {
        // Every earlier hold's token is dead before this holder got the VM.
        expect(await verifyAgentToken(t.db, earlier.tokenDuringHold)).toBeNull();
        expect(tokenDuringHold).not.toBe(earlier.tokenDuringHold);
      }
      expect(await verifyAgentToken(t.db, tokenDuringHold)).not.toBeNull();
      holds.push({ assignmentId, tokenDuringHold });
      await releaseVm(t.db, { userId: user.id, actor });
      await waitFor(`hold ${n} to be wiped`, async () => {
        const [row] = await t.db.select().from(vms).where(eq(vms.id, vm.id));
        return row?.state === "ready";
      });
    }
    const rotations = await t.db.execute<{ details: { reason: string; assignmentId?: string } }>(
      sql`SELECT details FROM audit_events WHERE action = 'agent.rotate_credential' AND target_id = ${vm.id} ORDER BY id`,
    );
    expect(
      rotations.filter((r) => r.details.reason === "assignment").map((r) => r.details.assignmentId),
    ).toEqual(holds.map((h) => h.assignmentId));
    expect(output).toContain("agent token rotated for the new assignment");
    for (const h of holds) expect(output).not.toContain(tokenSecret(h.tokenDuringHold));
  }, 60_000);
});
