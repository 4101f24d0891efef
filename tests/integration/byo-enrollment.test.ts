import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEnrollmentToken } from "../../server/auth/enrollment";
import { vms } from "../../server/db/schema";
import { systemActor } from "../../server/domain/vm-state";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, tokenSecret } from "../fixtures";
import { startApiServer } from "../http";

const AGENT = path.resolve(import.meta.dirname, "../../agent/src");
let t: TestDatabase;
let api: Awaited<ReturnType<typeof startApiServer>>;
const children: ChildProcess[] = [];

beforeAll(async () => {
  t = await createTestDatabase();
  api = await startApiServer(t.db, t.sql, 1);
});
afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  await api?.close();
  await t?.drop();
});

function run(script: string, env: Record<string, string>, args: string[] = []) {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(AGENT, script), ...args], {
    env: { PATH: process.env.PATH, NODE_ENV: "test", LABLINK_SERVER_URL: api.url, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  const exit = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  return { child, exit, out: () => out };
}

/** A byo fleet and a one-use enrollment token for it. */
async function byoFleetWithToken() {
  const fleet = await makeFleet(t.db, { driver: "byo", gpuCount: 1 });
  const { token } = await createEnrollmentToken(t.db, {
    fleetId: fleet.id,
    maxUses: 1,
    expiresInS: 600,
    actor: systemActor,
  });
  return { fleet, token };
}

describe("a bring-your-own machine", () => {
  it("enrolls once with the admin's token, then its agent registers and joins the pool", async () => {
    const { token } = await byoFleetWithToken();
    const dir = mkdtempSync(path.join(os.tmpdir(), "lablink-byo-"));
    const files = {
      LABLINK_AGENT_TOKEN_FILE: path.join(dir, "etc", "agent.token"),
      LABLINK_ENROLLED_ENV_FILE: path.join(dir, "etc", "enrolled.env"),
    };
    const first = run("enroll.ts", { LABLINK_ENROLLMENT_TOKEN: token, ...files });
    expect(await first.exit, first.out()).toBe(0);
    const vmId = /LABLINK_VM_ID=(\S+)/.exec(
      readFileSync(files.LABLINK_ENROLLED_ENV_FILE, "utf8"),
    )?.[1];
    expect(vmId).toMatch(/^[0-9a-f-]{36}$/);
    const agentToken = readFileSync(files.LABLINK_AGENT_TOKEN_FILE, "utf8").trim();
    expect(agentToken).toMatch(/^lla_/);
    expect(first.out()).not.toContain(tokenSecret(token));
    expect(first.out()).not.toContain(tokenSecret(agentToken));

    // Running it again (a service restart) keeps the enrollment.
    const again = run("enroll.ts", { LABLINK_ENROLLMENT_TOKEN: token, ...files });
    expect(await again.exit).toBe(0);
    expect(again.out()).toContain("already enrolled");

    // A second machine with the same single-use token is refused and writes nothing.
    const other = mkdtempSync(path.join(os.tmpdir(), "lablink-byo-"));
    const refused = run("enroll.ts", {
      LABLINK_ENROLLMENT_TOKEN: token,
      LABLINK_AGENT_TOKEN_FILE: path.join(other, "agent.token"),
      LABLINK_ENROLLED_ENV_FILE: path.join(other, "enrolled.env"),
    });
    expect(await refused.exit).toBe(1);
    expect(refused.out()).toMatch(/used up, expired or revoked/);
    expect(existsSync(path.join(other, "agent.token"))).toBe(false);

    run("main.ts", {
      LABLINK_VM_ID: vmId as string,
      LABLINK_AGENT_TOKEN_FILE: files.LABLINK_AGENT_TOKEN_FILE,
      LABLINK_SIMULATE_GPU: "NVIDIA RTX 4090:1",
      LABLINK_STATE_DIR: dir,
      LABLINK_HEARTBEAT_S: "0.5",
      LOG_LEVEL: "warn",
    });
    const deadline = Date.now() + 20_000;
    for (;;) {
      const [vm] = await t.db
        .select()
        .from(vms)
        .where(eq(vms.id, vmId as string));
      if (vm?.state === "ready" && vm.healthy) break;
      if (Date.now() > deadline) throw new Error(`VM never became ready: ${vm?.state}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  it("`lablink-agent --enroll TOKEN` enrolls once, then runs; a restart with the same flag keeps its VM", async () => {
    const { fleet, token } = await byoFleetWithToken();
    const stateDir = mkdtempSync(path.join(os.tmpdir(), "lablink-byo-flag-"));
    const env = {
      LABLINK_SIMULATE_GPU: "NVIDIA RTX 4090:1",
      LABLINK_HEARTBEAT_S: "0.5",
      LOG_LEVEL: "info",
    };
    const args = ["--server", api.url, "--enroll", token, "--state-dir", stateDir];
    const waitReady = async (vmId: string) => {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const [vm] = await t.db.select().from(vms).where(eq(vms.id, vmId));
        if (vm?.state === "ready" && vm.healthy) return;
        if (Date.now() > deadline) throw new Error(`VM never became ready: ${vm?.state}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    const enrolledEnv = path.join(stateDir, "enrolled.env");
    const first = run("main.ts", env, args);
    const deadline = Date.now() + 20_000;
    while (!existsSync(enrolledEnv)) {
      if (Date.now() > deadline || first.child.exitCode !== null) {
        throw new Error(`no enrollment: ${first.out()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const vmId = /LABLINK_VM_ID=(\S+)/.exec(readFileSync(enrolledEnv, "utf8"))?.[1] as string;
    expect(vmId).toMatch(/^[0-9a-f-]{36}$/);
    expect(readFileSync(path.join(stateDir, "agent.token"), "utf8")).toMatch(/^lla_/);
    await waitReady(vmId);
    first.child.kill("SIGTERM");
    expect(await first.exit).toBe(0);
    // The enrollment token is a secret: never in the agent's output.
    expect(first.out()).not.toContain(tokenSecret(token));

    // The service restarts with the same (now used-up) token: no second VM, the same one returns.
    const second = run("main.ts", env, args);
    // Its own words first (the VM may still look ready from the first run).
    const until = Date.now() + 20_000;
    while (!second.out().includes("already enrolled")) {
      if (Date.now() > until || second.child.exitCode !== null) {
        throw new Error(`no "already enrolled": ${second.out()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    await waitReady(vmId);
    const mine = await t.db.select().from(vms).where(eq(vms.fleetId, fleet.id));
    expect(mine.map((v) => v.id)).toEqual([vmId]);
    expect(second.out()).toContain("already enrolled");
    second.child.kill("SIGTERM");
    expect(await second.exit).toBe(0);
  });
});
