import type { LogLine, LogsInput } from "../../../server/protocol/agent";
import { Backoff, type BackoffOptions, childSignal, sleep } from "../backoff";
import type { LogFields, Logger } from "../log";
import { TransportError } from "../loop";
import { truncateLine } from "./tail";

/** The server's LOG_BATCH_MAX and LOG_LINE_MAX (server/protocol/agent.ts; a test checks they match). */
export const LOG_BATCH_MAX = 500;
export const LOG_LINE_MAX = 4096;

export type LogSource = LogLine["source"];
export type LogLevel = LogLine["level"];

/** Sends one batch; throws TransportError like the rest of the transport. */
export type LogSink = (input: LogsInput, signal: AbortSignal) => Promise<unknown>;

export type ShipperOptions = {
  vmId: string;
  bootId: string;
  send: LogSink;
  /** Lines held while the server is slow or away; the oldest go first when full. */
  maxBuffered: number;
  /** A batch goes out when this many lines wait, or every `flushMs` with whatever waits. */
  batchLines: number;
  flushMs: number;
  maxLineChars: number;
  /** The agent's own diagnostics about shipping (never fed back into the shipper). */
  log: Logger;
  backoff?: Partial<BackoffOptions>;
  requestTimeoutMs?: number;
  now?: () => Date;
};

/**
 * Patterns of secrets that must never leave the VM in a shipped line, whatever printed them:
 * LabLink agent and enrollment tokens, bearer headers, Chrome Remote Desktop codes and PINs.
 * The agent's logger already redacts secret-looking fields; this also covers free text
 * (cloud-init output, container logs, error messages).
 */
const SECRET_PATTERNS: [RegExp, string][] = [
  [/\bll[ae]_[0-9a-f]{32}_[A-Za-z0-9_-]{20,}/g, "[redacted-token]"],
  [/\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}/gi, "$1[redacted]"],
  [/(--code[=\s]+["']?)[^\s"']+/gi, "$1[redacted]"],
  [/\b4\/0[A-Za-z0-9_./-]{10,}/g, "[redacted-code]"],
  [/("?\b(?:pin|token|secret|password|authorization)\b"?\s*[:=]\s*"?)[^\s",}]+/gi, "$1[redacted]"],
  [/(\bpin\b[\s#:"'=]{0,3})\d{4,}/gi, "$1[redacted]"],
];

/** Rejects when `signal` aborts, even if `promise` ignores it (a sink must not hang the loop). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new TransportError("unavailable", "aborted"));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new TransportError("unavailable", "request timed out"));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

export function scrubSecrets(text: string): string {
  let out = text;
  for (const [re, replacement] of SECRET_PATTERNS) out = out.replace(re, replacement);
  return out;
}

/** A line's level from its text (cloud-init and containers print no structured level). */
export function guessLevel(line: string): LogLevel {
  if (/\b(error|fatal|critical|panic|traceback|failed)\b/i.test(line)) return "error";
  if (/\bwarn(ing)?\b/i.test(line)) return "warn";
  return "info";
}

/** How an agent log entry reads in the admin's tail: `msg {fields}` without time/level/vmId. */
export function formatAgentEntry(entry: LogFields): string {
  const { time: _t, level: _l, msg, vmId: _v, ...fields } = entry;
  const rest = Object.keys(fields).length > 0 ? ` ${JSON.stringify(fields)}` : "";
  return `${String(msg)}${rest}`;
}

/**
 * Ships log lines to the server (agent.logs): bounded buffer (oldest dropped and counted),
 * batched by size and time, retried with backoff. It runs its own loop, so a slow or absent
 * server never holds up the heartbeat; `push()` never blocks and never throws.
 */
export class LogShipper {
  private buffer: LogLine[] = [];
  private dropped = 0;
  private readonly stopController = new AbortController();
  private readonly backoff: Backoff;
  private wake: (() => void) | null = null;
  private running: Promise<void> | null = null;
  private sent = 0;

  constructor(private readonly o: ShipperOptions) {
    this.backoff = new Backoff(o.backoff);
  }

  /** Lines waiting to be sent. */
  get pending(): number {
    return this.buffer.length;
  }

  /** Lines dropped because the buffer was full, not yet reported to the server. */
  get droppedCount(): number {
    return this.dropped;
  }

  get sentCount(): number {
    return this.sent;
  }

  push(source: LogSource, level: LogLevel, message: string, at?: Date): void {
    if (this.stopController.signal.aborted) return;
    this.buffer.push({
      at: (at ?? this.o.now?.() ?? new Date()).toISOString(),
      source,
      level,
      message: truncateLine(scrubSecrets(message), this.o.maxLineChars),
    });
    if (this.buffer.length > this.o.maxBuffered) {
      const over = this.buffer.length - this.o.maxBuffered;
      this.buffer.splice(0, over);
      this.dropped += over;
    }
    if (this.buffer.length >= this.o.batchLines) this.wake?.();
  }

  start(): void {
    this.running ??= this.loop();
  }

  /** Stops the loop, then tries once to send what is left within `deadlineMs`. */
  async stop(deadlineMs = 500): Promise<void> {
    this.stopController.abort();
    this.wake?.();
    await this.running;
    if (this.buffer.length === 0) return;
    try {
      await this.sendBatch(AbortSignal.timeout(deadlineMs));
    } catch {
      // Going away anyway; the lines are lost, like any unsent log line at power-off.
    }
  }

  private async loop(): Promise<void> {
    const stop = this.stopController.signal;
    while (!stop.aborted) {
      if (this.buffer.length < this.o.batchLines) await this.nap(this.o.flushMs);
      if (stop.aborted) break;
      if (this.buffer.length === 0) continue;
      const { signal, done } = childSignal(stop, this.o.requestTimeoutMs ?? 15_000);
      try {
        await this.sendBatch(signal);
        this.backoff.reset();
      } catch (err) {
        if (stop.aborted) break;
        const kind = err instanceof TransportError ? err.kind : "unavailable";
        if (kind === "rejected") {
          // The server refused this batch (a bug on one side): retrying would refuse it forever.
          const lost = Math.min(this.buffer.length, this.o.batchLines);
          this.buffer.splice(0, lost);
          this.o.log.warn("server refused shipped log lines; dropped them", {
            lines: lost,
            status: err instanceof TransportError ? err.status : undefined,
          });
        } else {
          this.o.log.debug("could not ship log lines; will retry", { kind });
        }
        await sleep(this.backoff.next(), stop);
      } finally {
        done();
      }
    }
  }

  private nap(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(finish, ms);
      function finish() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = null;
        finish();
      };
    });
  }

  private async sendBatch(signal: AbortSignal): Promise<void> {
    const lines = this.buffer.slice(0, this.o.batchLines);
    const dropped = this.dropped;
    await abortable(
      this.o.send(
        {
          vmId: this.o.vmId,
          bootId: this.o.bootId,
          lines,
          ...(dropped > 0 ? { dropped } : {}),
        },
        signal,
      ),
      signal,
    );
    // Lines pushed meanwhile may have evicted the front of our batch (buffer full): remove only
    // the sent lines still there, and do not count the evicted ones as lost, they arrived.
    const first = this.buffer[0];
    const at = first === undefined ? -1 : lines.indexOf(first);
    if (at >= 0) this.buffer.splice(0, lines.length - at);
    this.dropped = Math.max(0, this.dropped - dropped - Math.max(0, at));
    this.sent += lines.length;
  }
}
