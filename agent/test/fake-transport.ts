import type {
  AckInput,
  AgentCommand,
  AgentReply,
  HeartbeatInput,
  RegisterInput,
} from "../../server/protocol/agent";
import {
  type AgentTransport,
  type PollRequest,
  TransportError,
  type TransportFailure,
} from "../src/loop";

type Op = "register" | "heartbeat" | "ack" | "poll";

/**
 * An in-memory server for loop tests: commands are level-triggered like the real one (they stay
 * until acknowledged), polls are held until the commands change, and failures can be injected.
 */
export class FakeServer implements AgentTransport {
  commands: AgentCommand[] = [];
  heartbeatIntervalS = 15;
  reRegisterNext = false;
  /** Poll answers at once even when nothing changed (a misbehaving server). */
  pollAnswersAtOnce = false;
  /** Acks are accepted but do not clear the command (the ack is "lost" on the server side). */
  dropAcks = false;
  readonly calls: { op: Op; at: number; input: unknown }[] = [];
  readonly registers: RegisterInput[] = [];
  readonly heartbeats: HeartbeatInput[] = [];
  readonly acks: AckInput[] = [];
  private readonly failures: { op: Op | "*"; kind: TransportFailure; times: number }[] = [];
  private waiters = new Set<() => void>();

  count(op: Op): number {
    return this.calls.filter((c) => c.op === op).length;
  }

  /** The next `times` calls of `op` fail with `kind`. */
  fail(op: Op | "*", kind: TransportFailure, times = 1): void {
    this.failures.push({ op, kind, times });
  }

  /** Replaces the command list and wakes held polls (like the server's LISTEN/NOTIFY). */
  setCommands(commands: AgentCommand[]): void {
    this.commands = commands;
    for (const wake of this.waiters) wake();
  }

  private reply(vmId: string): AgentReply {
    const reRegister = this.reRegisterNext;
    this.reRegisterNext = false;
    return {
      vmId,
      state: this.commands.length ? "claimed" : "ready",
      heartbeatIntervalS: this.heartbeatIntervalS,
      commands: structuredClone(this.commands),
      reRegister,
    };
  }

  private enter(op: Op, input: unknown, signal: AbortSignal): void {
    if (signal.aborted) throw new TransportError("unavailable", "aborted");
    this.calls.push({ op, at: Date.now(), input });
    const f = this.failures.find((x) => (x.op === op || x.op === "*") && x.times > 0);
    if (f) {
      f.times -= 1;
      const status = { unauthorized: 401, unavailable: 503, rejected: 409 }[f.kind];
      throw new TransportError(f.kind, `injected ${f.kind}`, { status });
    }
  }

  async register(input: RegisterInput, signal: AbortSignal): Promise<AgentReply> {
    this.enter("register", input, signal);
    this.registers.push(input);
    return this.reply(input.vmId);
  }

  async heartbeat(input: HeartbeatInput, signal: AbortSignal): Promise<AgentReply> {
    this.enter("heartbeat", input, signal);
    this.heartbeats.push(input);
    return this.reply(input.vmId);
  }

  async ack(input: AckInput, signal: AbortSignal): Promise<void> {
    this.enter("ack", input, signal);
    this.acks.push(input);
    if (!this.dropAcks) {
      this.setCommands(
        this.commands.filter(
          (c) =>
            c.type === "shutdown" || c.type !== input.type || c.assignmentId !== input.assignmentId,
        ),
      );
    }
  }

  async poll(input: PollRequest, signal: AbortSignal): Promise<AgentReply> {
    this.enter("poll", input, signal);
    if (this.commands.length > 0 || this.pollAnswersAtOnce) return this.reply(input.vmId);
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = () => {
        done();
        reject(new TransportError("unavailable", "aborted"));
      };
      const timer = setTimeout(done, input.waitMs);
      this.waiters.add(done);
      signal.addEventListener("abort", onAbort, { once: true });
    });
    return this.reply(input.vmId);
  }
}
