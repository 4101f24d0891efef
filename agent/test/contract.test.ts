import { afterEach, describe, expect, it } from "vitest";
import { LOCAL_REBOOT_EXIT_CODE } from "../../server/cloud/local/driver";
import {
  AGENT_PROTOCOL_VERSION,
  BACKLOG_MAX,
  heartbeatInput,
  REBOOT_EXIT_CODE,
  registerInput,
} from "../../server/protocol/agent";
import { createTrpcTransport } from "../src/client";
import type { CommandActions } from "../src/commands";
import { SimulatedProbe } from "../src/gpu/probe";
import { SimulatedGpus } from "../src/gpu/simulate";
import { silentLogger } from "../src/log";
import {
  BACKLOG_MAX as AGENT_BACKLOG_MAX,
  REBOOT_EXIT_CODE as AGENT_REBOOT_EXIT_CODE,
  Agent,
  PROTOCOL_VERSION,
  TransportError,
} from "../src/loop";
import { startContractServer } from "./contract-server";
import { eventually } from "./helpers";

const VM = "4b1d5a2e-8f3c-4c1a-9a59-2f8d1f0c7b11";
const A = "11111111-1111-4111-8111-111111111111";
const TOKEN = "lla_00000000000000000000000000000001_secret";

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function server() {
  const s = await startContractServer({ token: TOKEN });
  cleanups.push(s.close);
  return s;
}

const signal = () => AbortSignal.timeout(5_000);

describe("contract with the server (real tRPC over HTTP, server's zod schemas)", () => {
  it("speaks the server's protocol version and queues no more readings than it accepts", () => {
    expect(PROTOCOL_VERSION).toBe(AGENT_PROTOCOL_VERSION);
    expect(AGENT_BACKLOG_MAX).toBe(BACKLOG_MAX);
    expect(AGENT_REBOOT_EXIT_CODE).toBe(REBOOT_EXIT_CODE);
    expect(LOCAL_REBOOT_EXIT_CODE).toBe(REBOOT_EXIT_CODE);
  });

  it("register / heartbeat / ack / poll round-trip with the bearer token", async () => {
    const s = await server();
    const transport = createTrpcTransport({ serverUrl: s.url, token: () => TOKEN });
    const gpus = new SimulatedGpus({ model: "NVIDIA A10G", count: 2, vmId: VM }).read(false);
    const health = { healthy: true, reasons: [] };
    const reply = await transport.register(
      {
        vmId: VM,
        bootId: "b",
        hostname: "h",
        agentVersion: "0.1.0",
        protocolVersion: 1,
        gpus,
        health,
      },
      signal(),
    );
    expect(reply).toEqual({
      vmId: VM,
      state: "ready",
      heartbeatIntervalS: 15,
      commands: [],
      reRegister: false,
    });
    s.setCommands([{ type: "wipe", assignmentId: A }]);
    const hb = await transport.heartbeat(
      {
        vmId: VM,
        bootId: "b",
        gpus,
        health,
        inUse: false,
        idleSince: new Date().toISOString(),
        diskFreePct: 42.5,
      },
      signal(),
    );
    expect(hb.commands).toEqual([{ type: "wipe", assignmentId: A }]);
    expect((await transport.poll({ vmId: VM, waitMs: 1_000 }, signal())).commands).toHaveLength(1);
    await transport.ack({ vmId: VM, type: "wipe", assignmentId: A, ok: true }, signal());
    const t0 = Date.now();
    expect((await transport.poll({ vmId: VM, waitMs: 300 }, signal())).commands).toEqual([]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250); // held by the server
    expect(new Set(s.state.authHeaders)).toEqual(new Set([`Bearer ${TOKEN}`]));
  });

  it("maps HTTP failures to the loop's failure kinds", async () => {
    const s = await server();
    const transport = createTrpcTransport({ serverUrl: s.url, token: () => TOKEN });
    const poll = () => transport.poll({ vmId: VM, waitMs: 0 }, signal());
    const kindOf = async (p: Promise<unknown>) => {
      const err = await p.then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(TransportError);
      return { kind: (err as TransportError).kind, status: (err as TransportError).status };
    };

    const wrongToken = createTrpcTransport({ serverUrl: s.url, token: () => "lla_wrong" });
    expect(await kindOf(wrongToken.poll({ vmId: VM, waitMs: 0 }, signal()))).toEqual({
      kind: "unauthorized",
      status: 401,
    });
    s.state.failWith = { path: "*", code: "CONFLICT", times: 1 };
    expect(await kindOf(poll())).toEqual({ kind: "rejected", status: 409 });
    s.state.failWith = { path: "*", code: "INTERNAL_SERVER_ERROR", times: 1 };
    expect(await kindOf(poll())).toEqual({ kind: "unavailable", status: 500 });
    s.state.failWith = { path: "*", code: "TOO_MANY_REQUESTS", times: 1 };
    expect(await kindOf(poll())).toEqual({ kind: "unavailable", status: 429 });
    // An input the server's schema refuses is a 400 (the agent has a bug): rejected, not retried fast.
    expect(
      await kindOf(
        transport.ack({ vmId: VM, type: "wipe", assignmentId: "nope", ok: true }, signal()),
      ),
    ).toEqual({ kind: "rejected", status: 400 });

    await s.close();
    expect((await kindOf(poll())).kind).toBe("unavailable"); // connection refused
  });

  it("a whole agent against the HTTP server: registers, gets an assignment, heartbeats valid inputs", async () => {
    const s = await server();
    let token = TOKEN;
    const done: string[] = [];
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
      transport: createTrpcTransport({ serverUrl: s.url, token: () => token }),
      createGpuSource: (inUse) =>
        new SimulatedProbe(
          new SimulatedGpus({ model: "NVIDIA H100 80GB HBM3", count: 8, vmId: VM }),
          inUse,
        ),
      actions,
      log: silentLogger,
      heartbeatOverrideS: 0.1,
      pollWaitMs: 2_000,
      backoff: { baseMs: 20, capMs: 100, minMs: 10 },
    });
    const run = agent.run();
    cleanups.push(async () => {
      agent.stop();
      await run;
    });

    await eventually(() => s.state.registers.length === 1, 5_000, "register");
    s.setCommands([{ type: "assign", assignmentId: A, user: { id: "u-1", displayName: "Ada" } }]);
    await eventually(() => s.state.acks.length === 1, 2_000, "assign ack");
    expect(s.state.acks[0]).toEqual({ vmId: VM, type: "assign", assignmentId: A, ok: true });
    await eventually(() => s.state.heartbeats.some((h) => h.inUse), 2_000, "in-use heartbeat");

    // Every recorded input already passed the server's schema; re-check the shapes for clarity.
    expect(registerInput.safeParse(s.state.registers[0]).success).toBe(true);
    for (const h of s.state.heartbeats) expect(heartbeatInput.safeParse(h).success).toBe(true);
    expect(s.state.registers[0]?.gpus).toHaveLength(8);

    // The token is rotated on the server: 401, then the agent re-reads its token and registers again.
    s.state.token = "lla_rotated";
    await eventually(() => s.state.unauthorized > 0, 2_000, "a 401");
    token = "lla_rotated";
    await eventually(() => s.state.registers.length === 2, 5_000, "register after rotation");

    s.setCommands([{ type: "shutdown", reason: "VM is terminating" }]);
    expect(await run).toBe("shutdown");
    expect(done).toEqual([`assign:${A}`]);
  });
});
