import { mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { AckInput, AgentCommand } from "../../server/protocol/agent";
import type { Logger } from "./log";
import type { WorkFolder } from "./work-export";

export type AssignCommand = Extract<AgentCommand, { type: "assign" }>;
export type WipeCommand = Extract<AgentCommand, { type: "wipe" }>;
export type ConnectCommand = Extract<AgentCommand, { type: "connect" }>;
type WorkCommand = AssignCommand | WipeCommand | ConnectCommand;

export type AckRequest = Omit<AckInput, "vmId">;

/** What a command does on the VM. Implementations must be idempotent: a command may run twice. */
export interface CommandActions {
  assign(command: AssignCommand): Promise<void>;
  wipe(command: WipeCommand): Promise<void>;
  /** Remote-desktop hand-off; a thrown message is shown to the researcher, so make it readable. */
  connect(command: ConnectCommand): Promise<void>;
  /** Where the assignment's work folder is (work-export.ts); absent: no downloads. */
  workFolder?(assignmentId: string): Promise<WorkFolder | null>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Simulated setup and wipe inside the state directory:
 *   assignments/<assignmentId>.json   who holds the VM (the marker)
 *   home/<assignmentId>/              the user's "home", i.e. the traces a wipe must remove
 * Real SSH / remote-desktop setup replaces this later behind the same `CommandActions` interface.
 * No shell anywhere: only fs calls on paths built from validated UUIDs.
 */
export class StateDirActions implements CommandActions {
  constructor(private readonly stateDir: string) {}

  private paths(assignmentId: string) {
    if (!UUID.test(assignmentId)) throw new Error(`invalid assignment id "${assignmentId}"`);
    const id = assignmentId.toLowerCase();
    return {
      marker: join(this.stateDir, "assignments", `${id}.json`),
      home: join(this.stateDir, "home", id),
    };
  }

  /** Creates the folders and returns the assignments that were set up and not yet wiped. */
  async init(): Promise<string[]> {
    await mkdir(join(this.stateDir, "assignments"), { recursive: true, mode: 0o700 });
    await mkdir(join(this.stateDir, "home"), { recursive: true, mode: 0o700 });
    const files = await readdir(join(this.stateDir, "assignments"));
    return files.filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -".json".length));
  }

  async assign(command: AssignCommand): Promise<void> {
    const { marker, home } = this.paths(command.assignmentId);
    await mkdir(home, { recursive: true, mode: 0o700 });
    await writeFile(
      join(home, "README.txt"),
      `This VM is assigned to ${command.user.displayName}.\n`,
    );
    const record = {
      assignmentId: command.assignmentId,
      user: command.user,
      assignedAt: new Date().toISOString(),
    };
    // Write-then-rename so a crash never leaves a half-written marker behind.
    const tmp = `${marker}.tmp`;
    await writeFile(tmp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    await rename(tmp, marker);
  }

  connect(_command: ConnectCommand): Promise<void> {
    return Promise.reject(new Error("remote desktop hand-off is not set up on this VM"));
  }

  /** The simulated home of a current assignment. */
  async workFolder(assignmentId: string): Promise<WorkFolder | null> {
    const { marker, home } = this.paths(assignmentId);
    const held = await stat(marker).then(
      () => true,
      () => false,
    );
    return held ? { path: home } : null;
  }

  async wipe(command: WipeCommand): Promise<void> {
    const { marker, home } = this.paths(command.assignmentId);
    await rm(home, { recursive: true, force: true });
    await rm(marker, { force: true });
    // Also remove homes nobody holds any more (left by a crash between the two steps of assign).
    const held = new Set((await this.init()).map((id) => id.toLowerCase()));
    for (const entry of await readdir(join(this.stateDir, "home"))) {
      if (!held.has(entry.toLowerCase())) {
        await rm(join(this.stateDir, "home", entry), { recursive: true, force: true });
      }
    }
  }
}

type Entry = {
  command: WorkCommand;
  status: "queued" | "running" | "succeeded" | "failed";
  error?: string;
  attempts: number;
  /** A failed command may run again from this time on (epoch ms). */
  retryAt: number;
  lastAckAt: number;
  ackInFlight: boolean;
};

export type Usage = { inUse: boolean; idleSince: string | null };

export type CommandProcessorOptions = {
  actions: CommandActions;
  ack: (request: AckRequest) => Promise<void>;
  onShutdown: (reason: string) => void;
  /**
   * A warm reboot was asked for (automatic recovery); returns whether it is carried out (false:
   * not meant for this boot). Absent: the command is ignored.
   */
  onReboot?: (command: Extract<AgentCommand, { type: "reboot" }>) => boolean;
  /**
   * A desktop viewer waits on the server (protocol 4+): open the relay. Called once per relay
   * id; absent: the command is ignored.
   */
  onDesktop?: (command: Extract<AgentCommand, { type: "desktop" }>) => void;
  log: Logger;
  /** Assignments already set up when the agent starts (markers in the state dir). */
  activeAssignments?: string[];
  /** Don't re-send the same acknowledgement more often than this. */
  reackAfterMs?: number;
  /** First retry delay of a failed command; doubles per attempt up to retryCapMs. */
  retryBaseMs?: number;
  retryCapMs?: number;
  now?: () => number;
};

/**
 * Turns level-triggered commands into actions that run once.
 *
 * The server repeats a command in every reply until it has processed the acknowledgement, so:
 * - a new (type, assignmentId) runs once, in arrival order (a wipe finishes before the next assign);
 * - one that succeeded is never run again; if the server keeps sending it, the ack was lost, so it
 *   is acknowledged again (at most every `reackAfterMs`);
 * - one that failed was acknowledged with ok=false; if the server still sends it, it is retried
 *   after a growing delay (a failed assign stays pending on the server, a failed wipe does not).
 * Commands keep being accepted for the agent's whole life.
 */
export class CommandProcessor {
  private readonly entries = new Map<string, Entry>();
  private readonly pendingAcks = new Set<Promise<void>>();
  private queue: Promise<void> = Promise.resolve();
  private running = 0;
  private readonly active: Set<string>;
  private idleSince: number | null;
  private shutdownRequested = false;
  private rebootRequested = false;
  /** Relay ids already opened (the server offers each until the agent connects). */
  private readonly desktopRelays = new Set<string>();
  private readonly now: () => number;

  constructor(private readonly options: CommandProcessorOptions) {
    this.now = options.now ?? Date.now;
    this.active = new Set(options.activeAssignments ?? []);
    this.idleSince = this.active.size > 0 ? null : this.now();
  }

  /**
   * Takes the commands of one server reply and returns at once; work runs in the background.
   * Returns how many commands started work (new, retried or shutdown), so the caller can tell a
   * reply that only repeats known commands.
   */
  accept(commands: readonly AgentCommand[]): number {
    let started = 0;
    for (const command of commands) {
      if (command.type === "shutdown") {
        if (!this.shutdownRequested) {
          this.shutdownRequested = true;
          started += 1;
          this.options.log.info("server asked the agent to shut down", { reason: command.reason });
          this.options.onShutdown(command.reason);
        }
        continue;
      }
      if (command.type === "reboot") {
        if (!this.rebootRequested && this.options.onReboot?.(command)) {
          this.rebootRequested = true;
          started += 1;
          this.options.log.warn("server asked for a reboot", { reason: command.reason });
        }
        continue;
      }
      if (command.type === "desktop") {
        const id = String(command.relayId).toLowerCase();
        if (!UUID.test(id) || !UUID.test(command.assignmentId) || this.desktopRelays.has(id)) {
          continue;
        }
        this.desktopRelays.add(id);
        if (this.desktopRelays.size > 256) {
          const oldest = this.desktopRelays.values().next().value;
          if (oldest) this.desktopRelays.delete(oldest);
        }
        if (this.options.onDesktop) {
          started += 1;
          this.options.onDesktop(command);
        }
        continue;
      }
      if (command.type !== "assign" && command.type !== "wipe" && command.type !== "connect") {
        // A newer server's command this agent does not know: never guess what it means.
        this.options.log.warn("ignoring an unknown command", {
          type: String((command as { type: unknown }).type).slice(0, 40),
        });
        continue;
      }
      if (
        !UUID.test(command.assignmentId) ||
        (command.type === "connect" && !UUID.test(command.requestId))
      ) {
        this.options.log.error("ignoring command with an invalid assignment id", {
          type: command.type,
          assignmentId: String(command.assignmentId).slice(0, 80),
        });
        continue;
      }
      const key =
        command.type === "connect"
          ? `connect:${command.requestId.toLowerCase()}`
          : `${command.type}:${command.assignmentId.toLowerCase()}`;
      const entry = this.entries.get(key);
      if (!entry) {
        const fresh: Entry = {
          command,
          status: "queued",
          attempts: 0,
          retryAt: 0,
          lastAckAt: Number.NEGATIVE_INFINITY,
          ackInFlight: false,
        };
        this.entries.set(key, fresh);
        this.enqueue(fresh);
        started += 1;
      } else if (entry.status === "succeeded") {
        this.sendAck(entry, false);
      } else if (entry.status === "failed" && command.type === "connect") {
        // A hand-off is not retried: the code is single-use. The researcher submits a new one.
        this.sendAck(entry, false);
      } else if (entry.status === "failed" && this.now() >= entry.retryAt) {
        entry.command = command; // e.g. a newer display name
        this.enqueue(entry);
        started += 1;
      }
    }
    this.prune();
    return started;
  }

  /** True while a command is queued or running. */
  get busy(): boolean {
    return this.running > 0;
  }

  /** Resolves once everything accepted so far has run and its acknowledgement has settled. */
  async drain(): Promise<void> {
    await this.queue;
    await Promise.allSettled([...this.pendingAcks]);
  }

  usage(): Usage {
    return {
      inUse: this.active.size > 0,
      idleSince: this.idleSince === null ? null : new Date(this.idleSince).toISOString(),
    };
  }

  private enqueue(entry: Entry): void {
    entry.status = "queued";
    this.running += 1;
    this.queue = this.queue.then(() => this.execute(entry));
  }

  private async execute(entry: Entry): Promise<void> {
    const { command } = entry;
    // Never the command itself in a log line: a connect carries a setup code and a PIN.
    const log = this.options.log.child({
      command: command.type,
      assignmentId: command.assignmentId,
      ...(command.type === "connect" ? { requestId: command.requestId } : {}),
    });
    entry.status = "running";
    entry.attempts += 1;
    try {
      if (command.type === "assign") {
        await this.options.actions.assign(command);
        this.active.add(command.assignmentId.toLowerCase());
        this.idleSince = null;
      } else if (command.type === "connect") {
        await this.options.actions.connect(command);
      } else {
        await this.options.actions.wipe(command);
      }
      entry.status = "succeeded";
      entry.error = undefined;
      log.info(`${command.type} done`, { attempt: entry.attempts });
    } catch (err) {
      entry.status = "failed";
      entry.error = err instanceof Error ? err.message : String(err);
      const base = this.options.retryBaseMs ?? 5_000;
      const delay = Math.min(this.options.retryCapMs ?? 300_000, base * 2 ** (entry.attempts - 1));
      entry.retryAt = this.now() + delay;
      log.error(`${command.type} failed`, { attempt: entry.attempts, error: entry.error });
    } finally {
      if (command.type === "wipe") {
        // The holder is gone once the server asks for a wipe, whether or not the wipe worked.
        this.active.delete(command.assignmentId.toLowerCase());
        if (this.active.size === 0 && this.idleSince === null) this.idleSince = this.now();
      }
      this.running -= 1;
    }
    this.sendAck(entry, true);
  }

  private sendAck(entry: Entry, force: boolean): void {
    if (entry.ackInFlight) return;
    if (!force && this.now() - entry.lastAckAt < (this.options.reackAfterMs ?? 2_000)) return;
    entry.ackInFlight = true;
    entry.lastAckAt = this.now();
    const request: AckRequest = {
      type: entry.command.type,
      assignmentId: entry.command.assignmentId,
      ...(entry.command.type === "connect" ? { requestId: entry.command.requestId } : {}),
      ok: entry.status === "succeeded",
      ...(entry.status === "failed"
        ? { error: (entry.error ?? "unknown error").slice(0, 1000) }
        : {}),
    };
    const pending = this.options
      .ack(request)
      .then(
        () => this.options.log.debug("acknowledged", { ...request }),
        (err) =>
          // The server repeats the command until it gets an ack, so the next reply retries this.
          this.options.log.warn("acknowledgement failed", {
            type: request.type,
            assignmentId: request.assignmentId,
            error: err instanceof Error ? err.message : String(err),
          }),
      )
      .finally(() => {
        entry.ackInFlight = false;
        this.pendingAcks.delete(pending);
      });
    this.pendingAcks.add(pending);
  }

  /** Remembers the last few hundred commands; forgetting older ones is safe (actions are idempotent). */
  private prune(): void {
    const excess = this.entries.size - 256;
    if (excess <= 0) return;
    let removed = 0;
    for (const [key, entry] of this.entries) {
      if (removed >= excess) break;
      if (entry.status === "succeeded" || entry.status === "failed") {
        this.entries.delete(key);
        removed += 1;
      }
    }
  }
}
