import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type ReadinessInput,
  readinessInput,
  STARTUP_LINE_MAX as SERVER_LINE_MAX,
  STARTUP_LINES_MAX as SERVER_LINES_MAX,
} from "../../server/protocol/agent";
import {
  parseStartupResult,
  readReadiness,
  STARTUP_LINE_MAX,
  STARTUP_LINES_MAX,
} from "../src/boot/readiness";
import { runStartupScript, simulateBoot } from "../src/boot/simulate";
import type { GpuSnapshot, GpuSource } from "../src/gpu/probe";
import { silentLogger } from "../src/log";
import { Agent, type ExitReason } from "../src/loop";
import { FakeServer } from "./fake-transport";
import { eventually } from "./helpers";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "lablink-readiness-"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe("reading readiness from the bootstrap's files", () => {
  it("uses the server's limits", () => {
    expect(STARTUP_LINES_MAX).toBe(SERVER_LINES_MAX);
    expect(STARTUP_LINE_MAX).toBe(SERVER_LINE_MAX);
  });

  it("no marker and no result: starting; marker: ready; the result's fields go with it", async () => {
    const paths = {
      containerReadyFile: join(dir, "ready-1"),
      startupResultFile: join(dir, "result-1.json"),
    };
    expect(await readReadiness(paths)).toEqual({ container: "starting" });
    await writeFile(
      paths.startupResultFile,
      JSON.stringify({
        status: "ok",
        exitCode: 0,
        finishedAt: "2026-12-04T18:00:00Z",
        onError: "fail",
        container: "up",
        lastLines: ["hi"],
      }),
    );
    expect((await readReadiness(paths)).container).toBe("starting");
    await writeFile(paths.containerReadyFile, "");
    const r = await readReadiness(paths);
    expect(r).toEqual({
      container: "ready",
      startup: {
        status: "ok",
        exitCode: 0,
        onError: "fail",
        finishedAt: "2026-12-04T18:00:00.000Z",
        lastLines: ["hi"],
      },
    });
    expect(readinessInput.safeParse(r).success).toBe(true);
  });

  it("a failed script under policy fail (container stopped): container failed", async () => {
    const paths = { containerReadyFile: join(dir, "ready-2"), startupResultFile: join(dir, "r2") };
    await writeFile(
      paths.startupResultFile,
      JSON.stringify({ status: "failed", exitCode: 3, onError: "fail", container: "down" }),
    );
    expect(await readReadiness(paths)).toMatchObject({
      container: "failed",
      startup: { status: "failed", exitCode: 3, onError: "fail" },
    });
  });

  it("half-written or foreign JSON is no result; lines are capped and cleaned for the protocol", () => {
    expect(parseStartupResult('{"status": "ok", "exi')).toBeNull();
    expect(parseStartupResult('{"status": "maybe"}')).toBeNull();
    const many = Array.from({ length: 50 }, (_, i) => `line ${i}\u001b[0m`);
    const r = parseStartupResult(
      JSON.stringify({ status: "failed", exitCode: 1, lastLines: [...many, "x".repeat(900)] }),
    );
    expect(r?.lastLines).toHaveLength(20);
    expect(r?.lastLines[0]).toBe("line 31[0m");
    expect(r?.lastLines.at(-1)).toHaveLength(500);
    expect(r?.onError).toBe("continue");
  });
});

describe("the local fleet's simulated boot runs the fleet's startup script", () => {
  const boot = async (name: string, script: string | null, onError: "fail" | "continue") => {
    const root = join(dir, name);
    const scriptFile = join(dir, `${name}.sh`);
    if (script !== null) await writeFile(scriptFile, script);
    const paths = {
      procRoot: join(root, "proc"),
      cloudInitDir: join(root, "ci"),
      cloudInitLog: join(root, "ci.log"),
      containerLog: join(root, "container.log"),
      containerReadyFile: join(root, "container-ready"),
      startupResultFile: join(root, "startup-result.json"),
    };
    const sim = await simulateBoot(paths, {
      scale: 0.01,
      startup: {
        script: script === null ? null : scriptFile,
        onError,
        timeoutMs: 5_000,
        workDir: root,
      },
    });
    let r: ReadinessInput = await readReadiness(paths);
    for (const start = Date.now(); r.startup === undefined || r.container === "starting"; ) {
      if (Date.now() - start > 5_000) throw new Error("timed out waiting for a startup result");
      await new Promise((res) => setTimeout(res, 20));
      r = await readReadiness(paths);
    }
    sim.stop();
    return { r, paths, root };
  };

  it("`echo hi`: ok, container ready, the output in the container log; run in the VM's state dir", async () => {
    const { r, paths, root } = await boot("ok", "echo hi\npwd\n", "fail");
    expect(r).toMatchObject({ container: "ready", startup: { status: "ok", exitCode: 0 } });
    expect(r.startup?.lastLines).toEqual(["hi", root]);
    expect(await readFile(paths.containerLog, "utf8")).toContain(" hi\n");
  });

  it("`exit 3` with policy fail: failed, container down, no ready marker", async () => {
    const { r } = await boot(
      "fail",
      "echo 'installing'\necho 'no such package' >&2\nexit 3\n",
      "fail",
    );
    expect(r).toEqual({
      container: "failed",
      startup: expect.objectContaining({
        status: "failed",
        exitCode: 3,
        onError: "fail",
        lastLines: ["installing", "no such package"],
      }),
    });
  });

  it("`exit 3` with policy continue: container ready, the failure reported", async () => {
    const { r } = await boot("cont", "exit 3\n", "continue");
    expect(r).toMatchObject({
      container: "ready",
      startup: { status: "failed", exitCode: 3, onError: "continue" },
    });
  });

  it("no script: status none, ready", async () => {
    const { r } = await boot("none", null, "fail");
    expect(r).toMatchObject({ container: "ready", startup: { status: "none" } });
  });

  it("a script that outlives its timeout is killed and counts as failed", async () => {
    const scriptFile = join(dir, "slow.sh");
    await writeFile(scriptFile, "echo started\nsleep 30\n");
    const began = Date.now();
    const res = await runStartupScript(
      { script: scriptFile, onError: "fail", timeoutMs: 300, workDir: dir },
      async () => {},
    );
    expect(Date.now() - began).toBeLessThan(5_000);
    expect(res.exitCode).toBeNull();
    expect(res.lines).toEqual(["started", "lablink: startup script timed out after 0 s"]);
  });
});

const gpus: GpuSource = {
  latest: (): GpuSnapshot => ({
    gpus: [],
    health: { healthy: true, reasons: [] },
    takenAt: new Date(),
    source: "simulated",
  }),
  refresh: async function (this: GpuSource) {
    return this.latest();
  },
  dispose: () => {},
};
const running: { agent: Agent; done: Promise<ExitReason> }[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) {
    r.agent.stop();
    await r.done;
  }
});

describe("readiness in the agent loop", () => {
  it("goes with registration, then with the next heartbeat only when it changes", async () => {
    let current: ReadinessInput = { container: "starting" };
    const server = new FakeServer();
    const agent = new Agent({
      vmId: "4b1d5a2e-8f3c-4c1a-9a59-2f8d1f0c7b11",
      bootId: "boot-1",
      hostname: "h",
      agentVersion: "0.1.0",
      transport: server,
      createGpuSource: () => gpus,
      actions: { assign: async () => {}, wipe: async () => {}, connect: async () => {} },
      log: silentLogger,
      heartbeatOverrideS: 0.03,
      pollWaitMs: 100,
      minPollGapMs: 5,
      readiness: { latest: () => current, refresh: async () => {} },
    });
    running.push({ agent, done: agent.run() });
    await eventually(() => server.heartbeats.length >= 3, 3_000, "3 heartbeats");
    expect(server.registers[0]?.readiness).toEqual({ container: "starting" });
    expect(server.heartbeats.every((h) => h.readiness === undefined)).toBe(true);
    current = { container: "ready", startup: { status: "none", onError: "continue" } };
    const seen = server.heartbeats.length;
    await eventually(() => server.heartbeats.length >= seen + 3, 3_000, "3 more heartbeats");
    const carrying = server.heartbeats.filter((h) => h.readiness !== undefined);
    expect(carrying.map((h) => h.readiness)).toEqual([current]);
  });

  it("a change is sent at once, not with the next heartbeat a minute later", async () => {
    let current: ReadinessInput = { container: "starting" };
    const server = new FakeServer();
    const agent = new Agent({
      vmId: "4b1d5a2e-8f3c-4c1a-9a59-2f8d1f0c7b11",
      bootId: "boot-1",
      hostname: "h",
      agentVersion: "0.1.0",
      transport: server,
      createGpuSource: () => gpus,
      actions: { assign: async () => {}, wipe: async () => {}, connect: async () => {} },
      log: silentLogger,
      heartbeatOverrideS: 60,
      pollWaitMs: 100,
      minPollGapMs: 5,
      readinessPollMs: 20,
      readiness: { latest: () => current, refresh: async () => {} },
    });
    running.push({ agent, done: agent.run() });
    await eventually(() => server.registers.length === 1, 3_000, "registration");
    current = { container: "ready" };
    await eventually(
      () => server.heartbeats.some((h) => h.readiness?.container === "ready"),
      3_000,
      "a heartbeat carrying the ready container",
    );
  });
});
