import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Vm, vmLogs, vms } from "../../server/db/schema";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeAgent, makeFleet, makeVms, tokenSecret } from "../fixtures";
import { startApiServer } from "../http";

let t: TestDatabase;
let api: Awaited<ReturnType<typeof startApiServer>>;
let child: ChildProcess | undefined;
let output = "";
const dir = mkdtempSync(path.join(os.tmpdir(), "lablink-agent-logs-"));

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${output}`);
    await new Promise((r) => setTimeout(r, 150));
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

describe("a real agent ships its logs and boot timings to the real server", () => {
  it("cloud-init, container and agent lines arrive; boot timings fill in as the boot goes on", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 1 });
    const [vm] = (await makeVms(t.db, fleet, 1, "provisioning", { bootId: null })) as [Vm];
    const token = await makeAgent(t.db, vm);
    const proc = spawn(
      process.execPath,
      ["--import", "tsx", path.resolve(import.meta.dirname, "../../agent/src/main.ts")],
      {
        env: {
          PATH: process.env.PATH,
          NODE_ENV: "test",
          LABLINK_SERVER_URL: api.url,
          LABLINK_AGENT_TOKEN: token,
          LABLINK_VM_ID: vm.id,
          LABLINK_SIMULATE_GPU: "NVIDIA A10G:1",
          LABLINK_SIMULATE_BOOT: "1",
          LABLINK_STATE_DIR: dir,
          LABLINK_HEARTBEAT_S: "0.5",
          LABLINK_POLL_WAIT_MS: "1000",
          LABLINK_LOG_FLUSH_S: "0.3",
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

    const lines = () => t.db.select().from(vmLogs).where(eq(vmLogs.vmId, vm.id));
    await waitFor("an agent line", async () =>
      (await lines()).some((l) => l.source === "agent" && l.message.startsWith("registered")),
    );
    await waitFor("cloud-init's finish line", async () =>
      (await lines()).some(
        (l) => l.source === "cloud-init" && /Cloud-init v\. \S+ finished/.test(l.message),
      ),
    );
    await waitFor("the container's ready line", async () =>
      (await lines()).some((l) => l.source === "container" && l.message.includes("ready")),
    );

    const timings = await waitFor("complete boot timings", async () => {
      const [row] = await t.db.select().from(vms).where(eq(vms.id, vm.id));
      const b = row?.bootTimings;
      return b?.cloudInitStatus === "done" && b.containerReadyAt ? b : undefined;
    });
    const order = [
      timings.bootedAt,
      timings.agentStartedAt,
      timings.cloudInitFinishedAt,
      timings.containerReadyAt,
    ].map((s) => Date.parse(s ?? ""));
    for (const v of order) expect(Number.isFinite(v)).toBe(true);
    expect(order).toEqual([...order].sort((a, b) => a - b));
    expect(timings.registeredAt).toBeTruthy();

    const all = await lines();
    expect(
      all.every((l) => l.bootId === readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()),
    ).toBe(true);
    // Debug entries stay on the VM; the token never leaves it.
    expect(all.some((l) => l.message.startsWith("heartbeat"))).toBe(false);
    const tail = tokenSecret(token);
    for (const l of all) expect(l.message).not.toContain(tail);

    const started = Date.now();
    proc.kill("SIGTERM");
    await new Promise((r) => proc.once("exit", r));
    expect(Date.now() - started).toBeLessThan(2_000);
    await waitFor("the agent's last lines", async () =>
      (await lines()).some((l) => l.message.startsWith("agent stopping")),
    );
  });
});
