import { type ChildProcess, spawn } from "node:child_process";
import { readdir } from "node:fs/promises";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import pkg from "../package.json" with { type: "json" };
import { PROTOCOL_VERSION } from "../src/loop";
import { startContractServer } from "./contract-server";
import { eventually, FIXTURES, fakeBinary, tempDir } from "./helpers";

/** These tests start the real entry point (`tsx src/main.ts`) as a child process. */
const AGENT_DIR = join(import.meta.dirname, "..");
const VM = "4b1d5a2e-8f3c-4c1a-9a59-2f8d1f0c7b11";
const A = "11111111-1111-4111-8111-111111111111";
const TOKEN = "lla_00000000000000000000000000000001_do-not-log-me";

type Proc = {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: string | null; at: number }>;
};

const children: ChildProcess[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of children.splice(0))
    if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const c of cleanups.splice(0)) await c();
});

function startAgent(env: Record<string, string>, ipc = false): Proc {
  const child = spawn(process.execPath, ["--import", "tsx", join(AGENT_DIR, "src", "main.ts")], {
    cwd: AGENT_DIR,
    // Only what we pass: nothing from the test runner's environment leaks in (LOG_LEVEL etc.).
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
    stdio: ipc ? ["ignore", "pipe", "pipe", "ipc"] : ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let out = "";
  let err = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    err += d;
  });
  const exit = new Promise<{ code: number | null; signal: string | null; at: number }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  return { child, stdout: () => out, stderr: () => err, exit };
}

async function contractServer() {
  const s = await startContractServer({ token: TOKEN });
  cleanups.push(s.close);
  return s;
}

const logLines = (text: string) =>
  text
    .split("\n")
    .filter(Boolean)
    .map(
      (l) => JSON.parse(l) as { time: string; level: string; msg: string; [k: string]: unknown },
    );

/**
 * How a stop went, from the agent's own log: the normal path logs "agent stopping" then "agent
 * stopped" (the 1.8 s backstop exits without the second line). The agent's own clock is the
 * measure; the parent's view adds process scheduling, which on 2 busy cores can add 100s of ms.
 */
function stopReport(
  p: Proc,
  exit: { code: number | null; signal: string | null; at: number },
  sent: number,
) {
  const lines = logLines(p.stdout());
  const stopping = lines.find((l) => l.msg === "agent stopping");
  const stopped = lines.find((l) => l.msg === "agent stopped");
  return {
    code: exit.code,
    signal: exit.signal,
    reason: stopped?.reason,
    stopTookUnder1s:
      !!stopping && !!stopped && Date.parse(stopped.time) - Date.parse(stopping.time) < 1_000,
    exitedUnder3s: exit.at - sent < 3_000,
  };
}

describe("lablink agent process", () => {
  it("refuses to start without configuration and names the variables", async () => {
    const p = startAgent({ LABLINK_VM_ID: "nope" });
    const { code } = await p.exit;
    expect(code).toBe(2);
    expect(p.stderr()).toContain("LABLINK_SERVER_URL: is required");
    expect(p.stderr()).toContain("LABLINK_VM_ID: must be a UUID");
    expect(p.stderr()).toContain("LABLINK_AGENT_TOKEN");
  });

  it("runs with simulated GPUs, acts on an assignment, logs JSON lines without the token, exits 0 on SIGTERM", async () => {
    const s = await contractServer();
    const stateDir = await tempDir();
    const p = startAgent({
      LABLINK_SERVER_URL: s.url,
      LABLINK_AGENT_TOKEN: TOKEN,
      LABLINK_VM_ID: VM,
      LABLINK_SIMULATE_GPU: "NVIDIA A10G:2",
      LABLINK_HEARTBEAT_S: "0.1",
      LABLINK_STATE_DIR: stateDir,
      LABLINK_BOOT_ID: "boot-test",
      LOG_LEVEL: "debug",
    });
    await eventually(() => s.state.heartbeats.length >= 2, 15_000, "heartbeats from the process");
    expect(s.state.registers[0]).toMatchObject({
      vmId: VM,
      bootId: "boot-test",
      protocolVersion: PROTOCOL_VERSION,
    });
    expect(s.state.registers[0]?.gpus.map((g) => g.name)).toEqual(["NVIDIA A10G", "NVIDIA A10G"]);
    expect(s.state.heartbeats[0]?.diskFreePct).toBeTypeOf("number");

    s.setCommands([{ type: "assign", assignmentId: A, user: { id: "u-1", displayName: "Ada" } }]);
    await eventually(() => s.state.acks.length === 1, 3_000, "ack");
    expect(await readdir(join(stateDir, "assignments"))).toEqual([`${A}.json`]);

    const sent = Date.now();
    p.child.kill("SIGTERM");
    expect(stopReport(p, await p.exit, sent), p.stdout()).toEqual({
      code: 0,
      signal: null,
      reason: "stopped",
      stopTookUnder1s: true,
      exitedUnder3s: true,
    });

    const lines = logLines(p.stdout());
    expect(lines.length).toBeGreaterThan(3);
    for (const l of lines) {
      expect(Object.keys(l).slice(0, 3)).toEqual(["time", "level", "msg"]);
      expect(l.vmId).toBe(VM);
    }
    expect(lines.map((l) => l.msg)).toEqual(
      expect.arrayContaining(["agent starting", "registered", "agent stopped"]),
    );
    expect(lines.find((l) => l.msg === "agent starting")).toMatchObject({
      credentialFrom: "env",
      version: pkg.version,
    });
    expect(p.stdout()).not.toContain("do-not-log-me");
    expect(p.stderr()).not.toContain("do-not-log-me");
  });

  it("exits 0 on SIGTERM while it is still starting (here: enrolling with a server that never answers)", async () => {
    // A server that takes the connection and never answers: the agent waits in enrollment.
    const connected: Socket[] = [];
    const silent = createServer((socket) => connected.push(socket));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    cleanups.push(async () => {
      for (const socket of connected) socket.destroy();
      await new Promise((r) => silent.close(r));
    });
    const { port } = silent.address() as AddressInfo;
    const stateDir = await tempDir();
    const p = startAgent({
      LABLINK_SERVER_URL: `http://127.0.0.1:${port}`,
      LABLINK_ENROLLMENT_TOKEN: `lle_${"0".repeat(32)}_${"x".repeat(43)}`,
      LABLINK_STATE_DIR: stateDir,
    });
    await eventually(() => connected.length > 0, 15_000, "the enrollment request");
    p.child.kill("SIGTERM");
    const { code, signal } = await p.exit;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
  });

  it("exits when its parent disconnects the IPC channel (no orphans)", async () => {
    const s = await contractServer();
    const p = startAgent(
      {
        LABLINK_SERVER_URL: s.url,
        LABLINK_AGENT_TOKEN: TOKEN,
        LABLINK_VM_ID: VM,
        LABLINK_SIMULATE_GPU: "Tesla T4:1",
        LABLINK_HEARTBEAT_S: "0.2",
        LABLINK_STATE_DIR: await tempDir(),
      },
      true,
    );
    await eventually(() => s.state.registers.length === 1, 15_000, "register");
    const sent = Date.now();
    p.child.disconnect();
    expect(stopReport(p, await p.exit, sent), p.stdout()).toEqual({
      code: 0,
      signal: null,
      reason: "parent-disconnected",
      stopTookUnder1s: true,
      exitedUnder3s: true,
    });
  });

  it("probes GPUs through LABLINK_NVIDIA_SMI and reports the verdict", async () => {
    const s = await contractServer();
    const dir = await tempDir();
    const smi = await fakeBinary(dir, "nvidia-smi", `cat '${join(FIXTURES, "a100-4x-ecc.csv")}'`);
    const p = startAgent({
      LABLINK_SERVER_URL: s.url,
      LABLINK_AGENT_TOKEN: TOKEN,
      LABLINK_VM_ID: VM,
      LABLINK_NVIDIA_SMI: smi,
      LABLINK_EXPECTED_GPUS: "4",
      LABLINK_READ_XID: "0",
      LABLINK_HEARTBEAT_S: "0.1",
      LABLINK_STATE_DIR: dir,
    });
    await eventually(() => s.state.heartbeats.length >= 1, 15_000, "heartbeat");
    expect(s.state.registers[0]?.gpus).toHaveLength(4);
    expect(s.state.heartbeats[0]?.health).toEqual({
      healthy: false,
      reasons: [
        "GPU 2: uncorrectable ECC errors: 2",
        "GPU 2: row remapping pending (GPU reset required)",
      ],
    });
    p.child.kill("SIGINT");
    expect((await p.exit).code).toBe(0);
    expect(logLines(p.stdout()).some((l) => l.msg === "GPUs unhealthy")).toBe(true);
  });
});
