import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentCredentials, type Vm, vms } from "../../server/db/schema";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeAgent, makeFleet, makeVms, tokenSecret } from "../fixtures";
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

describe("a real agent with a token file", () => {
  it("takes over the rotated token at registration and keeps working after the old one dies", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 1 });
    const [vm] = (await makeVms(t.db, fleet, 1, "provisioning", { bootId: null })) as [Vm];
    const first = await makeAgent(t.db, vm);
    const tokenFile = path.join(dir, "agent.token");
    writeFileSync(tokenFile, `${first}\n`, { mode: 0o600 });
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
          LABLINK_STATE_DIR: dir,
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

    const second = await waitFor("the token file to be rewritten", async () => {
      const now = readFileSync(tokenFile, "utf8").trim();
      return now !== first && now;
    });
    expect(second).toMatch(/^lla_/);
    // The old credential is in its grace period, the new one live.
    const creds = await t.db
      .select()
      .from(agentCredentials)
      .where(eq(agentCredentials.vmId, vm.id));
    expect(creds).toHaveLength(2);
    // End the grace period: the agent must carry on with the new token alone.
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
