import { afterEach, describe, expect, it } from "vitest";
import type { BootTimingsInput } from "../../server/protocol/agent";
import type { GpuSnapshot, GpuSource } from "../src/gpu/probe";
import { silentLogger } from "../src/log";
import { Agent, type ExitReason } from "../src/loop";
import { FakeServer } from "./fake-transport";
import { eventually } from "./helpers";

const VM = "4b1d5a2e-8f3c-4c1a-9a59-2f8d1f0c7b11";

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

describe("boot timings in the agent loop", () => {
  it("go with registration, then with the next heartbeat only when they change", async () => {
    const running1: BootTimingsInput = {
      bootedAt: "2026-11-27T07:00:00.000Z",
      cloudInitFinishedAt: null,
      cloudInitStatus: "running",
      containerReadyAt: null,
      agentStartedAt: "2026-11-27T07:00:20.000Z",
    };
    let current: BootTimingsInput | null = running1;
    const server = new FakeServer();
    const agent = new Agent({
      vmId: VM,
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
      bootTimings: { latest: () => current, refresh: async () => {} },
    });
    running.push({ agent, done: agent.run() });

    await eventually(() => server.heartbeats.length >= 3, 3_000, "3 heartbeats");
    expect(server.registers[0]?.bootTimings).toEqual(running1);
    expect(server.heartbeats.every((h) => h.bootTimings === undefined)).toBe(true);

    const done = {
      ...running1,
      cloudInitFinishedAt: "2026-11-27T07:01:00.000Z",
      cloudInitStatus: "done" as const,
    };
    current = done;
    await eventually(() => server.heartbeats.some((h) => h.bootTimings), 3_000, "changed timings");
    const n = server.heartbeats.length;
    await eventually(() => server.heartbeats.length >= n + 3, 3_000, "3 more heartbeats");
    expect(server.heartbeats.filter((h) => h.bootTimings).map((h) => h.bootTimings)).toEqual([
      done,
    ]);
  });

  it("a heartbeat that fails sends the timings again with the next one", async () => {
    const t: BootTimingsInput = {
      bootedAt: "2026-11-27T07:00:00.000Z",
      cloudInitFinishedAt: null,
      cloudInitStatus: null,
      containerReadyAt: null,
      agentStartedAt: "2026-11-27T07:00:20.000Z",
    };
    let current: BootTimingsInput | null = null;
    const server = new FakeServer();
    const agent = new Agent({
      vmId: VM,
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
      backoff: { baseMs: 10, capMs: 20, minMs: 5 },
      bootTimings: { latest: () => current, refresh: async () => {} },
    });
    running.push({ agent, done: agent.run() });
    await eventually(() => server.heartbeats.length >= 1, 3_000, "a heartbeat");
    expect(server.registers[0]?.bootTimings).toBeUndefined();
    server.fail("heartbeat", "unavailable", 1);
    current = t;
    await eventually(() => server.heartbeats.some((h) => h.bootTimings), 3_000, "timings sent");
    expect(server.heartbeats.filter((h) => h.bootTimings)).toHaveLength(1);
  });
});
