/**
 * A bring-your-own fleet's whole life through the admin API, with real agent processes: the
 * admin creates the fleet (and gets its enrollment token), machines enroll with
 * `lablink-agent --enroll` and join the pool, the admin removes one machine (its agent stops,
 * its token is then revoked) and destroys the fleet (every other agent stops).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyAgentToken } from "../../server/auth/agent-tokens";
import { vms } from "../../server/db/schema";
import { finishByoRemovals } from "../../server/domain/byo";
import { systemActor } from "../../server/domain/vm-state";
import { apiClient } from "../api/harness";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeUser, tokenSecret } from "../fixtures";
import { startApiServer } from "../http";
import { waitFor } from "./helpers/wait";

const AGENT = path.resolve(import.meta.dirname, "../../agent/src/main.ts");
let t: TestDatabase;
let server: Awaited<ReturnType<typeof startApiServer>>;
let admin: ReturnType<typeof apiClient>;
let adminId = "";
const children: ChildProcess[] = [];

beforeAll(async () => {
  t = await createTestDatabase();
  server = await startApiServer(t.db, t.sql, 1);
  admin = apiClient(t.db);
  adminId = (await makeUser(t.db, "admin")).id;
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  await server?.close();
  await t?.drop();
});

/** `lablink-agent --enroll TOKEN` on a "machine" of its own; resolves once it has its VM id. */
async function machine(token: string) {
  const stateDir = mkdtempSync(path.join(os.tmpdir(), "lablink-byo-life-"));
  const child = spawn(
    process.execPath,
    ["--import", "tsx", AGENT, "--server", server.url, "--enroll", token, "--state-dir", stateDir],
    {
      env: {
        PATH: process.env.PATH,
        NODE_ENV: "test",
        LABLINK_SIMULATE_GPU: "NVIDIA RTX 4090:1",
        LABLINK_HEARTBEAT_S: "0.5",
        LOG_LEVEL: "info",
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  children.push(child);
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  const exit = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const enrolledEnv = path.join(stateDir, "enrolled.env");
  await waitFor(`enrollment (${out})`, async () => existsSync(enrolledEnv), 30_000);
  const vmId = /LABLINK_VM_ID=(\S+)/.exec(readFileSync(enrolledEnv, "utf8"))?.[1] as string;
  const agentToken = readFileSync(path.join(stateDir, "agent.token"), "utf8").trim();
  return { child, exit, vmId, agentToken, out: () => out };
}

const vmState = async (id: string) =>
  (await t.db.select().from(vms).where(eq(vms.id, id)))[0]?.state;

describe("a bring-your-own fleet through the admin API, with real agents", () => {
  it("machines enroll with the fleet's token; removing one stops its agent, destroying the fleet stops the rest", async () => {
    const created = await admin.mutate(
      "fleet.create",
      { driver: "byo", name: "byo-lab", gpuModel: "NVIDIA RTX 4090", size: 2 },
      { userId: adminId },
    );
    expect(created.status, JSON.stringify(created.error)).toBe(200);
    const { fleetId, enrollment } = created.data as {
      fleetId: string;
      enrollment: { token: string; maxUses: number };
    };
    expect(enrollment.maxUses).toBe(2);

    const [a, b] = await Promise.all([machine(enrollment.token), machine(enrollment.token)]);
    if (!a || !b) throw new Error("machines");
    for (const m of [a, b])
      await waitFor(`${m.vmId} ready`, async () => (await vmState(m.vmId)) === "ready", 30_000);
    const list = await admin.query("fleet.list", undefined, { userId: adminId });
    expect(
      (list.data as { id: string; openEnrollments: number }[]).find((f) => f.id === fleetId),
    ).toMatchObject({ openEnrollments: 0, vmCounts: { ready: 2 } });

    // Reboot is not LabLink's to do on a machine it does not own.
    const reboot = await admin.mutate("vm.reboot", { vmId: a.vmId }, { userId: adminId });
    expect(reboot.status).toBe(412);

    // Remove machine A: its agent hears "shutdown" and stops; the other keeps running.
    const removed = await admin.mutate("vm.terminate", { vmId: a.vmId }, { userId: adminId });
    expect(removed.data).toMatchObject({ operation: null, state: "terminating" });
    const code = await Promise.race([
      a.exit,
      new Promise((_, reject) => setTimeout(() => reject(new Error(a.out())), 20_000)),
    ]);
    expect(code).toBe(0);
    expect(a.out()).toMatch(/shut down/);
    expect(b.child.exitCode).toBeNull();
    // The worker's sweep then ends it and revokes its token.
    expect(await finishByoRemovals(t.db, 0, systemActor)).toBe(1);
    expect(await vmState(a.vmId)).toBe("terminated");
    expect(await verifyAgentToken(t.db, a.agentToken)).toBeNull();

    // Destroy the fleet: B stops too, and the fleet's token enrolls nobody any more.
    const destroyed = await admin.mutate("fleet.destroy", { fleetId }, { userId: adminId });
    expect(destroyed.data).toEqual({ operation: null, machinesStopped: 1 });
    const codeB = await Promise.race([
      b.exit,
      new Promise((_, reject) => setTimeout(() => reject(new Error(b.out())), 20_000)),
    ]);
    expect(codeB).toBe(0);
    expect(await finishByoRemovals(t.db, 0, systemActor)).toBe(1);
    expect(await verifyAgentToken(t.db, b.agentToken)).toBeNull();
    for (const m of [a, b]) expect(m.out()).not.toContain(tokenSecret(enrollment.token));
  }, 120_000);
});
