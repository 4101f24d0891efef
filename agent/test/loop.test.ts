import { afterEach, describe, expect, it } from "vitest";
import type { AgentCommand, GpuReadingInput } from "../../server/protocol/agent";
import type { CommandActions } from "../src/commands";
import type { GpuSnapshot, GpuSource } from "../src/gpu/probe";
import { createLogger, silentLogger } from "../src/log";
import {
  Agent,
  type AgentOptions,
  BACKLOG_MAX,
  type ExitReason,
  PROTOCOL_VERSION,
  TransportError,
} from "../src/loop";
import { FakeServer } from "./fake-transport";
import { eventually } from "./helpers";

const VM = "4b1d5a2e-8f3c-4c1a-9a59-2f8d1f0c7b11";
const A = "11111111-1111-4111-8111-111111111111";
const B = "22222222-2222-4222-8222-222222222222";
const assign = (id: string): AgentCommand => ({
  type: "assign",
  assignmentId: id,
  user: { id: "u-1", displayName: "Ada" },
});
const wipe = (id: string): AgentCommand => ({ type: "wipe", assignmentId: id });

const GPU: GpuReadingInput = {
  index: 0,
  uuid: "GPU-1",
  name: "NVIDIA H200",
  temperatureC: 37,
  utilizationPct: 0,
  memoryUsedMiB: 0,
  memoryTotalMiB: 143771,
  powerDrawW: 125.9,
  healthy: true,
  reasons: [],
};

class FakeGpus implements GpuSource {
  refreshes = 0;
  disposed = false;
  snapshot: GpuSnapshot = {
    gpus: [GPU],
    health: { healthy: true, reasons: [] },
    takenAt: new Date(),
    source: "simulated",
  };
  constructor(private readonly delayMs = 0) {}
  latest() {
    return this.snapshot;
  }
  async refresh() {
    this.refreshes += 1;
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    return this.snapshot;
  }
  dispose() {
    this.disposed = true;
  }
}

const running: { agent: Agent; done: Promise<ExitReason> }[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) {
    r.agent.stop();
    await r.done;
  }
});

function start(server: FakeServer, overrides: Partial<AgentOptions> = {}) {
  const done: string[] = [];
  const gpus = new FakeGpus();
  const actions: CommandActions = {
    assign: async (c) => {
      done.push(`assign:${c.assignmentId}`);
    },
    wipe: async (c) => {
      done.push(`wipe:${c.assignmentId}`);
    },
    connect: async (c) => {
      done.push(`connect:${c.requestId}`);
    },
  };
  const agent = new Agent({
    vmId: VM,
    bootId: "boot-1",
    hostname: "gpu-vm-1",
    agentVersion: "0.1.0",
    transport: server,
    createGpuSource: () => gpus,
    actions,
    log: silentLogger,
    heartbeatOverrideS: 0.05,
    pollWaitMs: 200,
    backoff: { baseMs: 10, capMs: 40, minMs: 5 },
    minPollGapMs: 5,
    reackAfterMs: 50,
    commandRetryBaseMs: 20,
    ...overrides,
  });
  const run = agent.run();
  running.push({ agent, done: run });
  return { agent, run, done, gpus };
}

describe("Agent loop (fake transport)", () => {
  it("registers first with readings, then heartbeats on the interval", async () => {
    const server = new FakeServer();
    const { gpus } = start(server);
    await eventually(() => server.heartbeats.length >= 3, 3_000, "3 heartbeats");
    expect(server.calls[0]?.op).toBe("register");
    expect(server.registers).toHaveLength(1);
    expect(server.registers[0]).toEqual({
      vmId: VM,
      bootId: "boot-1",
      hostname: "gpu-vm-1",
      agentVersion: "0.1.0",
      protocolVersion: PROTOCOL_VERSION,
      gpus: [GPU],
      health: { healthy: true, reasons: [] },
    });
    expect(server.heartbeats[0]).toMatchObject({
      vmId: VM,
      bootId: "boot-1",
      gpus: [GPU],
      health: { healthy: true, reasons: [] },
      inUse: false,
    });
    expect(server.heartbeats[0]?.idleSince).toMatch(/^\d{4}-\d\d-\d\dT.*Z$/);
    // The probe is restarted after each heartbeat, never awaited by it.
    expect(gpus.refreshes).toBeGreaterThanOrEqual(3);
  });

  it("heartbeats do not wait for a slow GPU probe", async () => {
    const server = new FakeServer();
    const gpus = new FakeGpus(400);
    start(server, { createGpuSource: () => gpus });
    // First registration waits for the first probe (400 ms); after that, 50 ms heartbeats go on
    // while later probes are still running.
    await eventually(() => server.registers.length === 1, 2_000, "register");
    const t0 = Date.now();
    await eventually(() => server.heartbeats.length >= 4, 2_000, "4 heartbeats");
    expect(Date.now() - t0).toBeLessThan(400);
  });

  it("uses the server's interval unless overridden, within sane bounds", async () => {
    const server = new FakeServer();
    server.heartbeatIntervalS = 0; // a broken server must not cause a busy loop
    const { agent } = start(server, { heartbeatOverrideS: null });
    await eventually(() => server.registers.length === 1, 2_000, "register");
    expect(agent.heartbeatIntervalMs).toBe(1_000);
    server.heartbeatIntervalS = 20;
    await eventually(() => agent.heartbeatIntervalMs === 20_000, 3_000, "interval 20 s");
  });

  it("delivers commands through the long poll within a second, without waiting for a heartbeat", async () => {
    const server = new FakeServer();
    const { done } = start(server, { heartbeatOverrideS: 30 });
    await eventually(() => server.count("poll") >= 1, 2_000, "first poll");
    const t0 = Date.now();
    server.setCommands([assign(A)]);
    await eventually(() => server.acks.length === 1, 1_000, "assign ack");
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(done).toEqual([`assign:${A}`]);
    expect(server.acks[0]).toEqual({ vmId: VM, type: "assign", assignmentId: A, ok: true });
    expect(server.heartbeats).toHaveLength(0);
  });

  it("keeps acting on commands for its whole life: assign, wipe, assign, wipe", async () => {
    const server = new FakeServer();
    const { done, agent } = start(server);
    for (const [command, expected] of [
      [assign(A), 1],
      [wipe(A), 2],
      [assign(B), 3],
      [wipe(B), 4],
    ] as const) {
      server.setCommands([command]);
      await eventually(() => server.acks.length === expected, 2_000, `ack ${expected}`);
    }
    expect(done).toEqual([`assign:${A}`, `wipe:${A}`, `assign:${B}`, `wipe:${B}`]);
    expect(agent.usage().inUse).toBe(false);
  });

  it("reports inUse while assigned", async () => {
    const server = new FakeServer();
    start(server);
    server.setCommands([assign(A)]);
    await eventually(() => server.heartbeats.some((h) => h.inUse), 2_000, "inUse heartbeat");
    const h = server.heartbeats.find((x) => x.inUse);
    expect(h?.idleSince).toBeNull();
  });

  it("commands arrive through heartbeats when the poll is failing", async () => {
    const server = new FakeServer();
    server.fail("poll", "rejected", 1_000);
    const { done } = start(server);
    server.setCommands([assign(A)]);
    await eventually(() => server.acks.length === 1, 2_000, "ack");
    expect(done).toEqual([`assign:${A}`]);
  });

  it("a lost ack is re-sent while the server repeats the command, and the poll does not spin", async () => {
    const server = new FakeServer();
    server.dropAcks = true;
    const { done } = start(server, { heartbeatOverrideS: 5 });
    server.setCommands([assign(A)]);
    await new Promise((r) => setTimeout(r, 1_000));
    expect(done).toEqual([`assign:${A}`]);
    expect(server.acks.length).toBeGreaterThanOrEqual(2);
    // The server answers every poll at once while the command is pending; backing off from
    // 0.5 s keeps that to a handful of polls per second rather than hundreds.
    expect(server.count("poll")).toBeLessThan(10);
  });

  it("a poll that returns at once with nothing to do cannot make a busy loop", async () => {
    const server = new FakeServer();
    server.pollAnswersAtOnce = true;
    start(server, { minPollGapMs: 50 });
    await new Promise((r) => setTimeout(r, 500));
    expect(server.count("poll")).toBeLessThanOrEqual(12);
  });

  it("registers again when a reply says reRegister", async () => {
    const server = new FakeServer();
    start(server);
    await eventually(() => server.heartbeats.length >= 1, 2_000, "heartbeat");
    server.reRegisterNext = true;
    await eventually(() => server.registers.length === 2, 3_000, "second register");
    await eventually(() => server.heartbeats.length >= 3, 2_000, "heartbeats after");
  });

  it("registers again after a 401 (rotated token)", async () => {
    const server = new FakeServer();
    start(server);
    await eventually(() => server.heartbeats.length >= 1, 2_000, "heartbeat");
    server.fail("heartbeat", "unauthorized", 1);
    await eventually(() => server.registers.length === 2, 3_000, "register after 401");
    const ops = server.calls.map((c) => c.op).filter((op) => op !== "poll" && op !== "ack");
    const i = ops.lastIndexOf("register");
    expect(ops[i - 1]).toBe("heartbeat");
  });

  it("backs off while the server is down, then recovers, with no busy loop", async () => {
    const server = new FakeServer();
    server.fail("*", "unavailable", 25);
    const lines: string[] = [];
    start(server, { log: createLogger({ write: (l) => lines.push(l) }) });
    await eventually(() => server.heartbeats.length >= 1, 5_000, "heartbeat after outage");
    // 25 failures across two loops with 5-40 ms delays: no more calls than failures + a few.
    expect(server.count("register")).toBeGreaterThanOrEqual(2);
    const first = server.calls[0]?.at ?? 0;
    const lastFailure = server.calls[24]?.at ?? 0;
    expect(lastFailure - first).toBeGreaterThan(25 * 5 * 0.5);
    expect(lines.some((l) => l.includes('"server unreachable"'))).toBe(true);
  });

  it("a stale ack (409) is logged as info, not as an error", async () => {
    const server = new FakeServer();
    server.fail("ack", "rejected", 1);
    const lines: string[] = [];
    start(server, { log: createLogger({ write: (l) => lines.push(l) }) });
    server.setCommands([assign(A)]);
    await eventually(() => server.count("ack") >= 1, 2_000, "ack attempt");
    await eventually(() => lines.some((l) => l.includes("no longer current")), 1_000, "log line");
    const entry = lines
      .map((l) => JSON.parse(l))
      .find((l) => l.msg === "acknowledgement no longer current");
    expect(entry).toMatchObject({ level: "info", operation: "ack", status: 409 });
    expect(lines.some((l) => l.includes('"server rejected a request"'))).toBe(false);
  });

  it("exits on a shutdown command and says why", async () => {
    const server = new FakeServer();
    const { run, gpus } = start(server);
    await eventually(() => server.heartbeats.length >= 1, 2_000, "heartbeat");
    server.setCommands([{ type: "shutdown", reason: "VM is terminating" }]);
    expect(await run).toBe("shutdown");
    expect(gpus.disposed).toBe(true);
  });

  it("stops for a warm reboot meant for its own boot, and ignores one meant for an earlier boot", async () => {
    const server = new FakeServer();
    const { agent, run } = start(server);
    await eventually(() => server.heartbeats.length >= 1, 2_000, "heartbeat");
    server.setCommands([{ type: "reboot", bootId: "an-earlier-boot", reason: "recovery" }]);
    await eventually(() => server.count("poll") >= 2, 2_000, "a reply with the command");
    expect(agent.stopped).toBe(false);
    const bootId = server.registers[0]?.bootId ?? "";
    server.setCommands([{ type: "reboot", bootId, reason: "recovery" }]);
    expect(await run).toBe("reboot");
  });

  it("stop() ends a held poll and both loops quickly", async () => {
    const server = new FakeServer();
    const { agent, run } = start(server, { pollWaitMs: 25_000, heartbeatOverrideS: 30 });
    await eventually(() => server.count("poll") >= 1, 2_000, "poll held");
    const t0 = Date.now();
    agent.stop();
    expect(await run).toBe("stopped");
    expect(Date.now() - t0).toBeLessThan(500);
  });

  it("queues readings while the server is unreachable (bounded) and sends them when it is back", async () => {
    const server = new FakeServer();
    start(server, { backoff: { baseMs: 1, capMs: 4, minMs: 1 } });
    await eventually(() => server.registers.length === 1, 2_000, "register");
    server.fail("heartbeat", "unavailable", BACKLOG_MAX + 10);
    await eventually(() => server.heartbeats.length >= 1, 10_000, "a heartbeat that gets through");
    const first = server.heartbeats[0];
    expect(first?.backlog).toHaveLength(BACKLOG_MAX);
    expect(first?.backlogDropped).toBe(10);
    expect(first?.backlog?.[0]).toMatchObject({
      healthy: true,
      inUse: false,
      maxUtilizationPct: 0,
    });
    await eventually(() => server.heartbeats.length >= 2, 2_000, "next heartbeat");
    expect(server.heartbeats[1]?.backlog).toBeUndefined();
    expect(server.heartbeats[1]?.backlogDropped).toBeUndefined();
  });

  it("a rejected heartbeat (4xx) is not queued: only an unreachable server is an outage", async () => {
    const server = new FakeServer();
    const { agent } = start(server);
    await eventually(() => server.registers.length === 1, 2_000, "register");
    server.fail("heartbeat", "rejected", 3);
    await eventually(() => server.heartbeats.length >= 1, 5_000, "heartbeat");
    expect(server.heartbeats[0]?.backlog).toBeUndefined();
    expect(agent.queuedReadings).toBe(0);
  });

  it("tells the server it is shutting down when stopped, but not when the server asked it to", async () => {
    const server = new FakeServer();
    const { agent, run } = start(server, { heartbeatOverrideS: 30 });
    await eventually(() => server.registers.length === 1, 2_000, "register");
    agent.stop();
    expect(await run).toBe("stopped");
    expect(server.heartbeats.at(-1)).toMatchObject({ shuttingDown: true, vmId: VM });

    const server2 = new FakeServer();
    const second = start(server2, { heartbeatOverrideS: 30 });
    await eventually(() => server2.registers.length === 1, 2_000, "register");
    server2.setCommands([{ type: "shutdown", reason: "VM is terminating" }]);
    expect(await second.run).toBe("shutdown");
    expect(server2.heartbeats.some((h) => h.shuttingDown)).toBe(false);
  });
});

describe("token rotation on every assignment", () => {
  /** A server that can rotate: records the order of rotations, confirmations and setups. */
  class RotatingServer extends FakeServer {
    readonly events: string[] = [];
    failRotations = 0;
    async rotate(input: { vmId: string; assignmentId: string }, signal: AbortSignal) {
      if (signal.aborted) throw new Error("aborted");
      if (this.failRotations > 0) {
        this.failRotations -= 1;
        this.events.push("rotate-failed");
        throw new TransportError("unavailable", "injected");
      }
      this.events.push(`rotate:${input.assignmentId}`);
    }
  }

  it("takes a new token and uses it once before setting the VM up for each holder; no setup while that fails", async () => {
    const server = new RotatingServer();
    server.failRotations = 1;
    // Like the real server, a failed assign stays pending (and each new command replaces the list).
    server.dropAcks = true;
    const actions: CommandActions = {
      assign: async (c) => {
        server.events.push(`assign:${c.assignmentId}`);
      },
      wipe: async (c) => {
        server.events.push(`wipe:${c.assignmentId}`);
      },
      connect: async () => {},
    };
    const origPoll = server.poll.bind(server);
    server.poll = (input, signal) => {
      if (input.waitMs === 0) server.events.push("confirm");
      return origPoll(input, signal);
    };
    start(server, { actions });
    server.setCommands([assign(A)]);
    await eventually(
      () => server.acks.some((a) => a.assignmentId === A && a.ok),
      3_000,
      "assign A",
    );
    server.setCommands([wipe(A)]);
    await eventually(() => server.acks.some((a) => a.type === "wipe"), 2_000, "wipe A");
    server.setCommands([assign(B)]);
    await eventually(
      () => server.acks.some((a) => a.assignmentId === B && a.type === "assign"),
      2_000,
      "assign B",
    );
    expect(server.events).toEqual([
      "rotate-failed",
      `rotate:${A}`,
      "confirm",
      `assign:${A}`,
      `wipe:${A}`,
      `rotate:${B}`,
      "confirm",
      `assign:${B}`,
    ]);
    // The failed first attempt was reported, then retried.
    expect(server.acks.find((a) => a.assignmentId === A && !a.ok)).toBeDefined();
  });
});
