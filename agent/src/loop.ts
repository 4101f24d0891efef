import type {
  AckInput,
  AgentReply,
  BacklogEntry,
  BootTimingsInput,
  HeartbeatInput,
  LogsInput,
  ReadinessInput,
  RegisterInput,
} from "../../server/protocol/agent";
import { Backoff, type BackoffOptions, childSignal, sleep, untilAborted } from "./backoff";
import { type CommandActions, CommandProcessor, type Usage } from "./commands";
import type { GpuSource } from "./gpu/probe";
import type { Logger } from "./log";
import type { UsageReport } from "./usage/detect";
import { AssignedUsageSource, type UsageSource } from "./usage/monitor";
import {
  type ArchiveOutcome,
  archiveWorkFolder,
  type ExportCommand,
  type ExportUploader,
  WorkExporter,
} from "./work-export";

/** Must match AGENT_PROTOCOL_VERSION in server/protocol/agent.ts (a test checks it). */
export const PROTOCOL_VERSION = 4;

/**
 * The exit code of an agent that stops for a warm reboot with LABLINK_REBOOT=exit (EX_TEMPFAIL):
 * its parent starts it again as a new boot. Must match the server's (a test checks it).
 */
export const REBOOT_EXIT_CODE = 75;

/** Most readings kept while the server is unreachable; the server's BACKLOG_MAX (a test checks). */
export const BACKLOG_MAX = 120;

export type PollRequest = { vmId: string; waitMs: number };

/**
 * How the agent talks to the server. The real one is tRPC over HTTP (client.ts); tests inject
 * fakes. Implementations throw `TransportError` so the loop can tell the failure kinds apart.
 */
export interface AgentTransport {
  register(input: RegisterInput, signal: AbortSignal): Promise<AgentReply>;
  heartbeat(input: HeartbeatInput, signal: AbortSignal): Promise<AgentReply>;
  ack(input: AckInput, signal: AbortSignal): Promise<void>;
  poll(input: PollRequest, signal: AbortSignal): Promise<AgentReply>;
  /**
   * agent.rotate: a new token before setting the VM up for a new assignment, stored by the
   * transport before it resolves. Absent when the agent cannot store a token (env token).
   */
  rotate?(input: { vmId: string; assignmentId: string }, signal: AbortSignal): Promise<void>;
  /** agent.logs (the log shipper's own loop; optional so test fakes can leave it out). */
  logs?(input: LogsInput, signal: AbortSignal): Promise<{ accepted: number }>;
  /** One chunk of a work-folder download (work-export.ts); absent: export commands are ignored. */
  uploadExport?: ExportUploader;
}

export type TransportFailure =
  /** 401: the token is wrong or was rotated. Re-read it and register again. */
  | "unauthorized"
  /** Network error, timeout, 5xx, 429: the server is not there right now. Back off. */
  | "unavailable"
  /** Any other 4xx: the server understood and said no. Log loudly, back off. */
  | "rejected";

export class TransportError extends Error {
  override name = "TransportError";

  constructor(
    readonly kind: TransportFailure,
    message: string,
    options?: { cause?: unknown; status?: number },
  ) {
    super(message, { cause: options?.cause });
    this.status = options?.status;
  }

  readonly status: number | undefined;
}

export type ExitReason = "stopped" | "shutdown" | "parent-disconnected" | "reboot";

export type AgentOptions = {
  vmId: string;
  bootId: string;
  hostname: string;
  agentVersion: string;
  transport: AgentTransport;
  /** Builds the GPU source; gets "is someone assigned" so simulated GPUs can look busy. */
  createGpuSource: (assigned: () => boolean) => GpuSource;
  /** In-use and idle detection; default: in use while assigned, idle as soon as not. */
  usage?: UsageSource;
  actions: CommandActions;
  activeAssignments?: string[];
  log: Logger;
  /** LABLINK_HEARTBEAT_S: wins over the server's heartbeatIntervalS. */
  heartbeatOverrideS?: number | null;
  pollWaitMs?: number;
  backoff?: Partial<BackoffOptions>;
  /** Least time between two polls, so a server that answers at once cannot make us spin. */
  minPollGapMs?: number;
  /** How often readiness is looked at while the container is starting (tests shorten it). */
  readinessPollMs?: number;
  requestTimeoutMs?: number;
  diskFreePct?: () => Promise<number | null>;
  /** Passed to CommandProcessor (tests shorten them). */
  commandRetryBaseMs?: number;
  reackAfterMs?: number;
  /** Work-archive upload tries and pauses (tests shorten them). */
  archive?: { attempts?: number; retryMs?: number; timeoutMs?: number };
  /** Deadline of the final "shutting down" report (SIGTERM must end the process within 2 s). */
  shutdownReportMs?: number;
  /** This boot's milestones; sent at registration and with the next heartbeat after a change. */
  bootTimings?: { latest(): BootTimingsInput | null; refresh(): Promise<void> };
  /**
   * The research container and startup script (boot/readiness.ts): sent at registration and with
   * the next heartbeat after a change; the server keeps the VM out of the pool until ready.
   */
  readiness?: { latest(): ReadinessInput | null; refresh(): Promise<void> };
  /** Opens a browser-desktop relay (protocol 4); absent: `desktop` commands are ignored. */
  onDesktop?: (command: { relayId: string; assignmentId: string }) => void;
};

/** A sleep that another loop can cut short. Not latched: only a sleeper at the time wakes. */
class Wakeup {
  private sleepers = new Set<() => void>();

  /** Resolves true when woken by `notify()`, false after `ms` or on abort. */
  wait(ms: number, signal: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve(false);
      const finish = (woken: boolean) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        this.sleepers.delete(onWake);
        resolve(woken);
      };
      const onAbort = () => finish(false);
      const onWake = () => finish(true);
      const timer = setTimeout(() => finish(false), ms);
      signal.addEventListener("abort", onAbort, { once: true });
      this.sleepers.add(onWake);
    });
  }

  notify(): void {
    for (const wake of this.sleepers) wake();
  }
}

const DEFAULT_INTERVAL_S = 15;
/** Bounds on the server's heartbeatIntervalS, so a bad value cannot make a busy loop or a dead VM. */
const MIN_INTERVAL_S = 1;
const MAX_INTERVAL_S = 300;

function describe(err: unknown): { kind: TransportFailure; message: string; status?: number } {
  if (err instanceof TransportError) {
    return { kind: err.kind, message: err.message, status: err.status };
  }
  return { kind: "unavailable", message: err instanceof Error ? err.message : String(err) };
}

/**
 * The agent's life: register, then two loops side by side until stopped.
 * - heartbeat loop: every interval sends the latest GPU reading (registering first when needed)
 *   and then starts the next probe, so a slow nvidia-smi never delays a heartbeat;
 * - poll loop: long-polls so commands arrive within about a second. Heartbeat replies carry the
 *   same commands, so a failing poll loses nothing.
 * Each loop backs off on its own with full jitter while the server is unreachable.
 */
export class Agent {
  readonly commands: CommandProcessor;
  /** Work archives uploaded before a wipe, by assignment: the wipe's ack reports them. */
  private readonly archives = new Map<string, ArchiveOutcome>();
  /** Work-folder downloads; null when the transport or the actions cannot do them. */
  readonly exports: WorkExporter | null;
  readonly gpus: GpuSource;
  private readonly stopController = new AbortController();
  private exitReason: ExitReason = "stopped";
  private needsRegister = true;
  private lastRegisterAt = Number.NEGATIVE_INFINITY;
  private intervalMs: number;
  private serverState: string | null = null;
  private readonly heartbeatBackoff: Backoff;
  private readonly heartbeatWake = new Wakeup();
  private readonly registeredWake = new Wakeup();
  private readonly log: Logger;
  private readonly usageSource: UsageSource;
  private usageReport: UsageReport = { inUse: false, idleSince: null, signals: [] };
  private usageSampling = false;
  /** Readings not delivered while the server was unreachable, oldest first, bounded. */
  private backlog: BacklogEntry[] = [];
  private backlogDropped = 0;
  /** The boot timings the server last took (JSON), so only changes are sent again. */
  private sentTimings: string | null = null;
  /** The readiness the server last took (JSON), so a heartbeat carries it only after a change. */
  private sentReadiness: string | null = null;

  constructor(private readonly options: AgentOptions) {
    this.log = options.log;
    this.intervalMs = (options.heartbeatOverrideS ?? DEFAULT_INTERVAL_S) * 1000;
    this.heartbeatBackoff = new Backoff(options.backoff);
    const actions = options.actions;
    this.commands = new CommandProcessor({
      actions: {
        // A fresh token before each new holder gets the VM: see rotateForAssignment.
        assign: async (command) => {
          await this.rotateForAssignment(command.assignmentId);
          return actions.assign(command);
        },
        wipe: async (command) => {
          // Upload first, once per assignment (a retried wipe does not upload again).
          const archive = command.archive;
          const id = command.assignmentId.toLowerCase();
          if (archive && !this.archives.has(id)) {
            const folder = (await actions.workFolder?.(command.assignmentId)) ?? null;
            const outcome = await archiveWorkFolder(folder, archive.url, {
              log: this.log,
              ...options.archive,
            });
            this.archives.set(id, outcome);
            this.log.info("work archive", {
              assignmentId: id,
              ok: outcome.ok,
              bytes: outcome.bytes,
            });
          }
          return actions.wipe(command);
        },
        connect: (command) => actions.connect(command),
      },
      activeAssignments: options.activeAssignments,
      ack: (request) => this.ack(request),
      onShutdown: () => this.stop("shutdown"),
      onReboot: (command) => {
        // A reboot meant for an earlier boot (a reply that crossed our restart) is already done.
        if (command.bootId !== options.bootId) return false;
        this.stop("reboot");
        return true;
      },
      ...(options.onDesktop ? { onDesktop: options.onDesktop } : {}),
      log: options.log,
      retryBaseMs: options.commandRetryBaseMs,
      reackAfterMs: options.reackAfterMs,
    });
    const upload = options.transport.uploadExport?.bind(options.transport);
    const folderFor = actions.workFolder?.bind(actions);
    this.exports =
      upload && folderFor ? new WorkExporter({ folderFor, upload, log: options.log }) : null;
    this.gpus = options.createGpuSource(() => this.commands.usage().inUse);
    this.usageSource =
      options.usage ?? new AssignedUsageSource(() => this.commands.usage().inUse, 0);
  }

  get stopped(): boolean {
    return this.stopController.signal.aborted;
  }

  get heartbeatIntervalMs(): number {
    return this.intervalMs;
  }

  /** Whether a researcher's assignment is set up (not the same as "in use"). */
  usage(): Usage {
    return this.commands.usage();
  }

  /** The latest in-use / idle report sent with heartbeats. */
  get latestUsage(): UsageReport {
    return this.usageReport;
  }

  /**
   * Samples usage in the background, like the GPU probe: reading /proc can block on a process
   * stuck in the kernel, and that must never hold up a heartbeat.
   */
  private refreshUsage(): Promise<void> {
    if (this.usageSampling) return Promise.resolve();
    this.usageSampling = true;
    return this.usageSource
      .sample(this.gpus.latest())
      .then(
        (report) => {
          if (report.inUse !== this.usageReport.inUse) {
            this.log.info(report.inUse ? "in use" : "no longer in use", {
              signals: report.signals,
            });
          }
          if ((report.idleSince === null) !== (this.usageReport.idleSince === null)) {
            this.log.info(report.idleSince ? "idle" : "active again", {
              idleSince: report.idleSince,
            });
          }
          this.usageReport = report;
        },
        (err) => this.log.error("usage sampling failed", { error: err }),
      )
      .finally(() => {
        this.usageSampling = false;
      });
  }

  /** Ends both loops; in-flight requests are aborted. The first reason wins. */
  stop(reason: ExitReason = "stopped"): void {
    if (this.stopped) return;
    this.exitReason = reason;
    this.log.info("agent stopping", { reason });
    this.exports?.stopAll();
    this.stopController.abort();
  }

  /** Runs until `stop()` (or a `shutdown` command). Never rejects for server trouble. */
  async run(): Promise<ExitReason> {
    const stop = this.stopController.signal;
    // The first registration should carry real readings; the probe is bounded by its own timeout.
    await untilAborted(this.gpus.refresh(), stop);
    await untilAborted(this.refreshUsage(), stop);
    if (this.options.bootTimings) await untilAborted(this.options.bootTimings.refresh(), stop);
    if (this.options.readiness) await untilAborted(this.options.readiness.refresh(), stop);
    await Promise.all([this.heartbeatLoop(), this.pollLoop(), this.readinessLoop()]);
    // Let a command that is half done finish and be acknowledged, briefly (SIGTERM gives us ~2 s).
    await untilAborted(this.commands.drain(), AbortSignal.timeout(1_000));
    await this.reportShuttingDown();
    this.gpus.dispose();
    return this.exitReason;
  }

  /** Runs one request with a signal that aborts on stop() or after `timeoutMs`. */
  private async request<T>(
    timeoutMs: number,
    send: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const { signal, done } = childSignal(this.stopController.signal, timeoutMs);
    try {
      return await send(signal);
    } finally {
      done();
    }
  }

  private get requestTimeoutMs(): number {
    return this.options.requestTimeoutMs ?? 15_000;
  }

  private async heartbeatLoop(): Promise<void> {
    const stop = this.stopController.signal;
    while (!this.stopped) {
      let delay: number;
      try {
        if (this.needsRegister) await this.register();
        else await this.heartbeat();
        this.heartbeatBackoff.reset();
        delay = this.intervalMs;
      } catch (err) {
        if (this.stopped) break;
        this.noteFailure(this.needsRegister ? "register" : "heartbeat", err);
        delay = this.heartbeatBackoff.next();
      }
      this.gpus
        .refresh()
        .catch((err) => this.log.error("GPU probe failed", { error: err }))
        .then(() => this.refreshUsage());
      this.options.bootTimings?.refresh();
      this.options.readiness?.refresh();
      const woken = await this.heartbeatWake.wait(delay, stop);
      // Woken early to register: still keep a second between registrations, so a server that
      // keeps asking for one cannot drive a tight register loop.
      const sinceRegister = Date.now() - this.lastRegisterAt;
      if (woken && sinceRegister < 1_000) await sleep(1_000 - sinceRegister, stop);
    }
  }

  private async register(): Promise<void> {
    const snapshot = this.gpus.latest();
    const timings = this.options.bootTimings?.latest() ?? null;
    const readiness = this.options.readiness?.latest() ?? null;
    this.lastRegisterAt = Date.now();
    const reply = await this.request(this.requestTimeoutMs, (signal) =>
      this.options.transport.register(
        {
          vmId: this.options.vmId,
          bootId: this.options.bootId,
          hostname: this.options.hostname,
          agentVersion: this.options.agentVersion,
          protocolVersion: PROTOCOL_VERSION,
          gpus: snapshot.gpus,
          health: snapshot.health,
          ...(timings ? { bootTimings: timings } : {}),
          ...(readiness ? { readiness } : {}),
        },
        signal,
      ),
    );
    this.needsRegister = false;
    this.sentTimings = timings ? JSON.stringify(timings) : null;
    this.sentReadiness = readiness ? JSON.stringify(readiness) : null;
    this.log.info("registered", {
      state: reply.state,
      healthy: snapshot.health.healthy,
      gpus: snapshot.gpus.length,
    });
    this.handleReply(reply);
    this.registeredWake.notify();
  }

  private async heartbeat(): Promise<void> {
    const snapshot = this.gpus.latest();
    const usage = this.usageReport;
    const diskFreePct = this.options.diskFreePct
      ? await this.options.diskFreePct().catch(() => null)
      : undefined;
    const input: HeartbeatInput = {
      vmId: this.options.vmId,
      bootId: this.options.bootId,
      gpus: snapshot.gpus,
      health: snapshot.health,
      inUse: usage.inUse,
      idleSince: usage.idleSince,
      ...(diskFreePct === undefined ? {} : { diskFreePct }),
    };
    const timings = this.options.bootTimings?.latest() ?? null;
    const timingsJson = timings ? JSON.stringify(timings) : null;
    const sendTimings = timings !== null && timingsJson !== this.sentTimings;
    const readiness = this.options.readiness?.latest() ?? null;
    const readinessJson = readiness ? JSON.stringify(readiness) : null;
    const sendReadiness = readiness !== null && readinessJson !== this.sentReadiness;
    const backlog = this.backlog.slice();
    const dropped = this.backlogDropped;
    let reply: AgentReply;
    try {
      reply = await this.request(this.requestTimeoutMs, (signal) =>
        this.options.transport.heartbeat(
          {
            ...input,
            ...(backlog.length > 0 ? { backlog } : {}),
            ...(dropped > 0 ? { backlogDropped: dropped } : {}),
            ...(sendTimings ? { bootTimings: timings } : {}),
            ...(sendReadiness ? { readiness } : {}),
          },
          signal,
        ),
      );
    } catch (err) {
      if (!this.stopped && describe(err).kind === "unavailable") this.queueReading(input);
      throw err;
    }
    if (sendTimings && !reply.reRegister) this.sentTimings = timingsJson;
    if (sendReadiness && !reply.reRegister) this.sentReadiness = readinessJson;
    if (backlog.length > 0) {
      this.log.info("sent readings queued while the server was unreachable", {
        count: backlog.length,
        dropped,
      });
      this.backlog.splice(0, backlog.length);
      this.backlogDropped -= dropped;
    }
    this.log.debug("heartbeat", { state: reply.state, commands: reply.commands.length });
    this.handleReply(reply);
  }

  /**
   * Before a VM is set up for a new holder the agent takes a new token and uses it once, which
   * retires the old one on the server: a token someone read during the last hold (root on the
   * VM) is dead before the next holder gets in. If this fails the assignment fails and is retried
   * (the server keeps asking), so nobody is set up on a VM whose old token still works.
   */
  private async rotateForAssignment(assignmentId: string): Promise<void> {
    const { transport, vmId } = this.options;
    const rotate = transport.rotate?.bind(transport);
    if (!rotate) return;
    await this.request(this.requestTimeoutMs, (signal) => rotate({ vmId, assignmentId }, signal));
    await this.request(this.requestTimeoutMs, (signal) =>
      transport.poll({ vmId, waitMs: 0 }, signal),
    );
    this.log.info("agent token rotated for the new assignment", { assignmentId });
  }

  /** Tells the server we are going away (SIGTERM: reboot, upgrade), within a short deadline. */
  private async reportShuttingDown(): Promise<void> {
    if (this.needsRegister || this.exitReason === "shutdown") return;
    const snapshot = this.gpus.latest();
    try {
      await this.options.transport.heartbeat(
        {
          vmId: this.options.vmId,
          bootId: this.options.bootId,
          gpus: snapshot.gpus,
          health: snapshot.health,
          inUse: this.usageReport.inUse,
          idleSince: this.usageReport.idleSince,
          shuttingDown: true,
        },
        AbortSignal.timeout(this.options.shutdownReportMs ?? 800),
      );
      this.log.info("reported shutting down");
    } catch (err) {
      this.log.warn("could not report shutting down", { error: describe(err).message });
    }
  }

  /** Keeps a compact copy of a reading the server did not get. */
  private queueReading(input: HeartbeatInput): void {
    const utils = input.gpus.map((g) => g.utilizationPct).filter((v): v is number => v !== null);
    const temps = input.gpus.map((g) => g.temperatureC).filter((v): v is number => v !== null);
    this.backlog.push({
      at: new Date().toISOString(),
      healthy: input.health.healthy,
      reasons: input.health.reasons.slice(0, 20),
      inUse: input.inUse,
      maxUtilizationPct: utils.length > 0 ? Math.max(...utils) : null,
      maxTemperatureC: temps.length > 0 ? Math.max(...temps) : null,
    });
    if (this.backlog.length > BACKLOG_MAX) {
      this.backlogDropped += this.backlog.length - BACKLOG_MAX;
      this.backlog.splice(0, this.backlog.length - BACKLOG_MAX);
    }
  }

  /** Readings waiting to be sent (tests, logs). */
  get queuedReadings(): number {
    return this.backlog.length;
  }

  /**
   * The VM joins the pool only after the server hears the container is ready, so a change is
   * sent at once (a heartbeat woken early), not with the next heartbeat a minute later. Looks
   * every second while the container is not ready or a change is unsent, else every 15 s.
   */
  private async readinessLoop(): Promise<void> {
    const source = this.options.readiness;
    if (!source) return;
    const stop = this.stopController.signal;
    while (!this.stopped) {
      await untilAborted(source.refresh(), stop);
      const latest = source.latest();
      const unsent = latest !== null && JSON.stringify(latest) !== this.sentReadiness;
      // Not latched: repeated each round until a heartbeat (or registration) carried it.
      // Not while the server is unreachable: the heartbeat backoff decides then.
      if (unsent && !this.needsRegister && this.heartbeatBackoff.failures === 0) {
        // The same heartbeat then carries the container-ready time for the boot timeline.
        if (this.options.bootTimings) await untilAborted(this.options.bootTimings.refresh(), stop);
        this.heartbeatWake.notify();
      }
      const settled = latest !== null && latest.container !== "starting" && !unsent;
      await sleep(settled ? 15_000 : (this.options.readinessPollMs ?? 1_000), stop);
    }
  }

  private async pollLoop(): Promise<void> {
    const stop = this.stopController.signal;
    const backoff = new Backoff(this.options.backoff);
    const waitMs = this.options.pollWaitMs ?? 25_000;
    const minGapMs = this.options.minPollGapMs ?? 250;
    let repeats = 0;
    while (!this.stopped) {
      if (this.needsRegister) {
        await this.registeredWake.wait(1_000, stop);
        continue;
      }
      // The server answers a poll at once while a command is pending; wait until ours are done
      // (and acknowledged) rather than fetch the same command again and again.
      if (this.commands.busy) {
        await untilAborted(this.commands.drain(), stop);
        continue;
      }
      const started = Date.now();
      try {
        const reply = await this.request(waitMs + this.requestTimeoutMs, (signal) =>
          this.options.transport.poll({ vmId: this.options.vmId, waitMs }, signal),
        );
        backoff.reset();
        const fresh = this.handleReply(reply);
        // A reply that only repeats known commands means the server has not caught up with our
        // ack yet (or lost it): poll again, but slower each time, up to the heartbeat interval.
        repeats = reply.commands.length > 0 && fresh === 0 ? repeats + 1 : 0;
        const gap = repeats === 0 ? minGapMs : Math.min(this.intervalMs, 500 * 2 ** (repeats - 1));
        const elapsed = Date.now() - started;
        await sleep(repeats === 0 ? Math.max(0, gap - elapsed) : gap, stop);
      } catch (err) {
        if (this.stopped) break;
        this.noteFailure("poll", err);
        await sleep(backoff.next(), stop);
      }
    }
  }

  private async ack(request: Omit<AckInput, "vmId">): Promise<void> {
    const archive =
      request.type === "wipe" ? this.archives.get(request.assignmentId.toLowerCase()) : undefined;
    try {
      await this.request(this.requestTimeoutMs, (signal) =>
        this.options.transport.ack(
          { vmId: this.options.vmId, ...request, ...(archive ? { archive } : {}) },
          signal,
        ),
      );
    } catch (err) {
      if (!this.stopped) this.noteFailure("ack", err);
      throw err;
    }
  }

  /** Applies one reply from any procedure; returns how many commands started work. */
  private handleReply(reply: AgentReply): number {
    if (reply.state !== this.serverState) {
      this.log.info("server state", { state: reply.state, previous: this.serverState });
      this.serverState = reply.state;
    }
    if (this.options.heartbeatOverrideS == null) {
      const s = Number(reply.heartbeatIntervalS);
      const bounded = Number.isFinite(s)
        ? Math.min(MAX_INTERVAL_S, Math.max(MIN_INTERVAL_S, s))
        : DEFAULT_INTERVAL_S;
      if (bounded * 1000 !== this.intervalMs) {
        this.log.info("heartbeat interval", { seconds: bounded });
        this.intervalMs = bounded * 1000;
      }
    }
    if (reply.reRegister) this.requestRegister("server asked to register again");
    const all = reply.commands ?? [];
    const exports = all.filter((c): c is ExportCommand => c.type === "export");
    // A wipe ends the holder's downloads first: tar must not read a folder being deleted.
    for (const c of all) if (c.type === "wipe") this.exports?.cancelAssignment(c.assignmentId);
    const started = this.exports?.accept(exports) ?? 0;
    return started + this.commands.accept(all.filter((c) => c.type !== "export"));
  }

  private requestRegister(why: string): void {
    if (this.needsRegister) return;
    this.log.info("will register again", { why });
    this.needsRegister = true;
    // Wake the heartbeat loop unless it is backing off from failures (then it keeps its delay).
    if (this.heartbeatBackoff.failures === 0) this.heartbeatWake.notify();
  }

  private noteFailure(operation: string, err: unknown): void {
    const { kind, message, status } = describe(err);
    const fields = { operation, kind, status, error: message };
    if (operation === "ack" && status === 409) {
      // The assignment moved on (released, reassigned) before our ack arrived: nothing to do.
      this.log.info("acknowledgement no longer current", fields);
      return;
    }
    if (kind === "unauthorized") {
      // The token may have been rotated: the next request re-reads it, then we register again.
      this.log.warn("server rejected the agent token", fields);
      this.requestRegister("token rejected");
    } else if (kind === "rejected") {
      this.log.error("server rejected a request", fields);
    } else {
      this.log.warn("server unreachable", fields);
    }
  }
}
