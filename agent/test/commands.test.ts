import { randomUUID } from "node:crypto";
import { access, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { AgentCommand } from "../../server/protocol/agent";
import {
  type AckRequest,
  type CommandActions,
  CommandProcessor,
  StateDirActions,
} from "../src/commands";
import { silentLogger } from "../src/log";
import { tempDir } from "./helpers";

const A = "11111111-1111-4111-8111-111111111111";
const B = "22222222-2222-4222-8222-222222222222";
const assign = (id: string, name = "Ada"): AgentCommand => ({
  type: "assign",
  assignmentId: id,
  user: { id: "u-1", displayName: name },
});
const wipe = (id: string): AgentCommand => ({ type: "wipe", assignmentId: id });

function setup(options: { failAssign?: number; failAck?: number } = {}) {
  const calls: string[] = [];
  const acks: AckRequest[] = [];
  const shutdowns: string[] = [];
  let clock = 1_000_000;
  let assignFailures = options.failAssign ?? 0;
  let ackFailures = options.failAck ?? 0;
  const actions: CommandActions = {
    assign: async (c) => {
      calls.push(`assign:${c.assignmentId}`);
      if (assignFailures > 0) {
        assignFailures -= 1;
        throw new Error("disk full");
      }
    },
    wipe: async (c) => {
      calls.push(`wipe:${c.assignmentId}`);
    },
    connect: async (c) => {
      calls.push(`connect:${c.requestId}`);
      if (c.code.includes("FAIL")) throw new Error("Chrome Remote Desktop setup failed: expired");
    },
  };
  const processor = new CommandProcessor({
    actions,
    ack: async (a) => {
      acks.push(a);
      if (ackFailures > 0) {
        ackFailures -= 1;
        throw new Error("server unreachable");
      }
    },
    onShutdown: (reason) => shutdowns.push(reason),
    log: silentLogger,
    reackAfterMs: 2_000,
    retryBaseMs: 5_000,
    now: () => clock,
  });
  return {
    processor,
    calls,
    acks,
    shutdowns,
    advance: (ms: number) => {
      clock += ms;
    },
  };
}

describe("CommandProcessor: level-triggered commands run once", () => {
  it("runs a new assign once and acknowledges it", async () => {
    const t = setup();
    expect(t.processor.accept([assign(A)])).toBe(1);
    await t.processor.drain();
    expect(t.calls).toEqual([`assign:${A}`]);
    expect(t.acks).toEqual([{ type: "assign", assignmentId: A, ok: true }]);
  });

  it("a repeated command is not run again; it is re-acknowledged, at most every 2 s", async () => {
    const t = setup();
    t.processor.accept([assign(A)]);
    await t.processor.drain();
    expect(t.processor.accept([assign(A)])).toBe(0); // right after the ack: the reply crossed it
    await t.processor.drain();
    expect(t.acks).toHaveLength(1);
    t.advance(2_000);
    expect(t.processor.accept([assign(A)])).toBe(0);
    await t.processor.drain();
    expect(t.calls).toEqual([`assign:${A}`]);
    expect(t.acks).toEqual([
      { type: "assign", assignmentId: A, ok: true },
      { type: "assign", assignmentId: A, ok: true },
    ]);
  });

  it("a lost ack is sent again when the server repeats the command", async () => {
    const t = setup({ failAck: 1 });
    t.processor.accept([assign(A)]);
    await t.processor.drain();
    t.advance(2_500);
    t.processor.accept([assign(A)]);
    await t.processor.drain();
    expect(t.acks).toHaveLength(2);
    expect(t.calls).toHaveLength(1);
  });

  it("same reply delivered twice at once (poll + heartbeat) still runs once", async () => {
    const t = setup();
    t.processor.accept([assign(A)]);
    t.processor.accept([assign(A)]);
    await t.processor.drain();
    expect(t.calls).toEqual([`assign:${A}`]);
    expect(t.acks).toHaveLength(1);
  });

  it("keeps taking commands after the first assignment (the original agent stopped here)", async () => {
    const t = setup();
    for (const reply of [[assign(A)], [wipe(A)], [assign(B, "Grace")], [wipe(B)], [assign(A)]]) {
      t.processor.accept(reply);
      await t.processor.drain();
      t.advance(3_000);
    }
    expect(t.calls).toEqual([`assign:${A}`, `wipe:${A}`, `assign:${B}`, `wipe:${B}`]);
    expect(t.acks.map((a) => `${a.type}:${a.assignmentId}:${a.ok}`)).toEqual([
      `assign:${A}:true`,
      `wipe:${A}:true`,
      `assign:${B}:true`,
      `wipe:${B}:true`,
      `assign:${A}:true`, // re-ack of the old one, never a re-run after its wipe
    ]);
  });

  it("runs commands in order: a wipe finishes before the next assign starts", async () => {
    const order: string[] = [];
    const processor = new CommandProcessor({
      actions: {
        assign: async (c) => {
          order.push(`assign ${c.assignmentId} start`);
          order.push(`assign ${c.assignmentId} end`);
        },
        wipe: async (c) => {
          order.push(`wipe ${c.assignmentId} start`);
          await new Promise((r) => setTimeout(r, 30));
          order.push(`wipe ${c.assignmentId} end`);
        },
        connect: async () => {},
      },
      ack: async () => {},
      onShutdown: () => {},
      log: silentLogger,
    });
    processor.accept([wipe(A), assign(B)]);
    expect(processor.busy).toBe(true);
    await processor.drain();
    expect(processor.busy).toBe(false);
    expect(order).toEqual([
      `wipe ${A} start`,
      `wipe ${A} end`,
      `assign ${B} start`,
      `assign ${B} end`,
    ]);
  });

  it("a failed command is acked with ok=false and retried after a growing delay", async () => {
    const t = setup({ failAssign: 2 });
    t.processor.accept([assign(A)]);
    await t.processor.drain();
    expect(t.acks).toEqual([{ type: "assign", assignmentId: A, ok: false, error: "disk full" }]);
    t.advance(4_999);
    expect(t.processor.accept([assign(A)])).toBe(0);
    t.advance(1);
    expect(t.processor.accept([assign(A)])).toBe(1); // retry 1 (fails again)
    await t.processor.drain();
    t.advance(5_000);
    expect(t.processor.accept([assign(A)])).toBe(0); // now 10 s
    t.advance(5_000);
    expect(t.processor.accept([assign(A)])).toBe(1); // retry 2 succeeds
    await t.processor.drain();
    expect(t.calls).toHaveLength(3);
    expect(t.acks.map((a) => a.ok)).toEqual([false, false, true]);
  });

  it("connect runs once per request id, acks with the request id, and a failed one is not retried", async () => {
    const R1 = "33333333-3333-4333-8333-333333333333";
    const R2 = "44444444-4444-4444-8444-444444444444";
    const connect = (requestId: string, code: string): AgentCommand => ({
      type: "connect",
      method: "crd",
      assignmentId: A,
      requestId,
      code,
      pin: "402913",
    });
    const t = setup();
    t.processor.accept([assign(A), connect(R1, "4/FAIL-code-xyz")]);
    await t.processor.drain();
    expect(t.acks).toEqual([
      { type: "assign", assignmentId: A, ok: true },
      {
        type: "connect",
        assignmentId: A,
        requestId: R1,
        ok: false,
        error: "Chrome Remote Desktop setup failed: expired",
      },
    ]);
    // Repeated (the ack was lost): not run again, whatever the delay, only re-acknowledged.
    t.advance(600_000);
    expect(t.processor.accept([connect(R1, "4/FAIL-code-xyz")])).toBe(0);
    await t.processor.drain();
    expect(t.calls).toEqual([`assign:${A}`, `connect:${R1}`]);
    expect(t.acks.at(-1)).toMatchObject({ type: "connect", requestId: R1, ok: false });
    // A new request (new code) for the same assignment runs.
    expect(t.processor.accept([connect(R2, "4/good-code-xyz")])).toBe(1);
    await t.processor.drain();
    expect(t.acks.at(-1)).toEqual({ type: "connect", assignmentId: A, requestId: R2, ok: true });
  });

  it("ignores command types it does not know (a newer server), without acting or acking", async () => {
    const t = setup();
    const unknown = { type: "reboot", assignmentId: A } as unknown as AgentCommand;
    expect(t.processor.accept([unknown])).toBe(0);
    await t.processor.drain();
    expect(t.calls).toEqual([]);
    expect(t.acks).toEqual([]);
  });

  it("tracks use: in use after assign, idle (with a timestamp) after wipe", async () => {
    const t = setup();
    const idleAtStart = t.processor.usage();
    expect(idleAtStart).toEqual({ inUse: false, idleSince: new Date(1_000_000).toISOString() });
    t.processor.accept([assign(A)]);
    await t.processor.drain();
    expect(t.processor.usage()).toEqual({ inUse: true, idleSince: null });
    t.advance(60_000);
    t.processor.accept([wipe(A)]);
    await t.processor.drain();
    expect(t.processor.usage()).toEqual({
      inUse: false,
      idleSince: new Date(1_060_000).toISOString(),
    });
  });

  it("starts in use when the state dir still holds an assignment", () => {
    const processor = new CommandProcessor({
      actions: { assign: async () => {}, wipe: async () => {}, connect: async () => {} },
      ack: async () => {},
      onShutdown: () => {},
      log: silentLogger,
      activeAssignments: [A],
    });
    expect(processor.usage()).toEqual({ inUse: true, idleSince: null });
  });

  it("shutdown is reported once; invalid assignment ids are ignored without an ack", async () => {
    const t = setup();
    expect(t.processor.accept([{ type: "shutdown", reason: "VM is terminating" }])).toBe(1);
    expect(t.processor.accept([{ type: "shutdown", reason: "VM is terminating" }])).toBe(0);
    expect(t.shutdowns).toEqual(["VM is terminating"]);
    expect(t.processor.accept([wipe("../../etc")])).toBe(0);
    await t.processor.drain();
    expect(t.calls).toEqual([]);
    expect(t.acks).toEqual([]);
  });
});

describe("StateDirActions (simulated setup and wipe)", () => {
  it("assign writes a marker and a home; wipe removes both; init lists what is held", async () => {
    const dir = await tempDir();
    const actions = new StateDirActions(dir);
    expect(await actions.init()).toEqual([]);
    await actions.assign({
      type: "assign",
      assignmentId: A,
      user: { id: "u-1", displayName: "Ada" },
    });
    const marker = JSON.parse(await readFile(join(dir, "assignments", `${A}.json`), "utf8"));
    expect(marker).toMatchObject({ assignmentId: A, user: { id: "u-1", displayName: "Ada" } });
    expect(await readFile(join(dir, "home", A, "README.txt"), "utf8")).toContain("Ada");
    expect(await actions.init()).toEqual([A]);
    // Idempotent: running it twice is fine.
    await actions.assign({
      type: "assign",
      assignmentId: A,
      user: { id: "u-1", displayName: "Ada" },
    });

    await actions.wipe({ type: "wipe", assignmentId: A });
    expect(await actions.init()).toEqual([]);
    expect(await readdir(join(dir, "home"))).toEqual([]);
    await actions.wipe({ type: "wipe", assignmentId: A }); // twice is fine too
  });

  it("wipe also removes homes that nobody holds, but not a current holder's", async () => {
    const dir = await tempDir();
    const actions = new StateDirActions(dir);
    await actions.init();
    await actions.assign({
      type: "assign",
      assignmentId: B,
      user: { id: "u-2", displayName: "Grace" },
    });
    const { mkdir } = await import("node:fs/promises");
    await mkdir(join(dir, "home", "orphan"));
    await actions.wipe({ type: "wipe", assignmentId: A });
    expect(await readdir(join(dir, "home"))).toEqual([B]);
  });

  it("refuses assignment ids that are not UUIDs (no path traversal)", async () => {
    const dir = await tempDir();
    const actions = new StateDirActions(dir);
    await actions.init();
    // A name no one else uses: the test must not depend on what else is in the temp folder.
    const outside = `lablink-escape-${randomUUID()}`;
    await expect(actions.wipe({ type: "wipe", assignmentId: `../${outside}` })).rejects.toThrow(
      "invalid assignment id",
    );
    await expect(access(join(dir, "..", outside))).rejects.toThrow();
  });
});
