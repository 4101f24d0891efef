import { EventEmitter } from "node:events";
import postgres from "postgres";
import { getDatabase } from "./db/client";
import { logger } from "./log";

const CHANNEL = "lablink_vm";
/** Emitted to every waiter: the LISTEN connection was away and changes may have been missed. */
const RESYNC = Symbol("resync");

export type VmEventHubOptions = {
  /** First retry of a failed LISTEN connection; doubles up to `retryCapMs`. */
  retryBaseMs?: number;
  retryCapMs?: number;
  /**
   * While the LISTEN connection is down, a waiting long poll re-reads the database this often
   * instead of waiting for a push that cannot come.
   */
  degradedPollMs?: number;
};

/**
 * One LISTEN connection per server process, fanned out in memory to every agent long-poll this
 * process holds. Thousands of waiting agents cost one Postgres connection, not one each
 * (the original's scale ceiling, issue #240).
 *
 * The connection is the hub's own (postgres.js with `max: 1`), so the hub sees it close: a
 * failed first connection, a terminated backend or a Postgres restart is retried with backoff
 * for as long as it takes. Meanwhile long polls re-read the database every `degradedPollMs`, and
 * when LISTEN is back every waiter re-reads once, so nothing notified in the gap is lost.
 */
export class VmEventHub {
  private readonly emitter = new EventEmitter();
  private client: postgres.Sql | null = null;
  private up = false;
  private connecting: Promise<void> | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private degradedTimer: NodeJS.Timeout | null = null;
  private failures = 0;
  private closed = false;
  private readonly retryBaseMs: number;
  private readonly retryCapMs: number;
  private readonly degradedPollMs: number;
  /** Counters (tests, metrics): LISTEN connections made, and lost. */
  readonly stats = { connects: 0, disconnects: 0 };

  constructor(
    private readonly sql: postgres.Sql,
    options: VmEventHubOptions = {},
  ) {
    this.emitter.setMaxListeners(0);
    this.retryBaseMs = options.retryBaseMs ?? 250;
    this.retryCapMs = options.retryCapMs ?? 10_000;
    this.degradedPollMs = options.degradedPollMs ?? 1_000;
  }

  /** Whether this process's LISTEN connection is active now. */
  get listening(): boolean {
    return this.up;
  }

  private onPayload(payload: string) {
    try {
      const { id } = JSON.parse(payload) as { id: string };
      this.emitter.emit(id);
    } catch {
      // A malformed payload is not ours; ignore it.
    }
  }

  private ensureClient(): postgres.Sql {
    // A copy of the application pool's settings, one connection, never recycled while idle.
    this.client ??= postgres({
      ...this.sql.options,
      max: 1,
      idle_timeout: null,
      max_lifetime: null,
      // An attempt that hangs (a server still starting, a dropped route) fails soon and is
      // retried, instead of holding up reconnection for the driver's default 30 s.
      connect_timeout: 5,
      fetch_types: false,
      onnotice: () => {},
      onnotify: (channel: string, payload: string) => {
        if (channel === CHANNEL) this.onPayload(payload);
      },
      onclose: () => this.onClose(),
    } as unknown as postgres.Options<Record<string, postgres.PostgresType>>);
    return this.client;
  }

  private onClose() {
    if (this.closed || !this.up) return;
    this.up = false;
    this.stats.disconnects++;
    logger.warn({ channel: CHANNEL }, "LISTEN connection lost; reconnecting");
    this.startDegraded();
    this.scheduleRetry();
  }

  private scheduleRetry() {
    if (this.closed || this.retryTimer || this.connecting) return;
    const delay = Math.min(this.retryCapMs, this.retryBaseMs * 2 ** Math.min(this.failures, 16));
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, delay);
    this.retryTimer.unref();
  }

  private resyncAll() {
    for (const name of this.emitter.eventNames()) this.emitter.emit(name, RESYNC);
  }

  /** No push can come while LISTEN is down: waiting long polls look again now and then. */
  private startDegraded() {
    if (this.degradedTimer || this.closed) return;
    this.degradedTimer = setInterval(() => this.resyncAll(), this.degradedPollMs);
    this.degradedTimer.unref();
  }

  private stopDegraded() {
    if (this.degradedTimer) clearInterval(this.degradedTimer);
    this.degradedTimer = null;
  }

  /** One attempt to (re)establish LISTEN; never rejects. */
  private connect(): Promise<void> {
    if (this.closed || this.up) return Promise.resolve();
    this.connecting ??= (async () => {
      // postgres.js keeps a query waiting while it cannot connect: poll the database meanwhile.
      const slow = setTimeout(() => this.startDegraded(), this.degradedPollMs);
      slow.unref();
      try {
        await this.ensureClient().unsafe(`LISTEN ${CHANNEL}`);
        if (this.closed) return;
        const wasDown = this.stats.connects > 0 || this.failures > 0;
        this.up = true;
        this.failures = 0;
        this.stats.connects++;
        this.stopDegraded();
        if (wasDown) {
          logger.info({ channel: CHANNEL }, "LISTEN connection restored");
          // Anything notified while we were away is unknown: every waiter re-reads.
          this.resyncAll();
        }
      } catch (err) {
        this.failures++;
        this.startDegraded();
        logger.warn(
          {
            channel: CHANNEL,
            attempt: this.failures,
            error: err instanceof Error ? err.message : String(err),
          },
          "LISTEN connection failed; retrying",
        );
      } finally {
        clearTimeout(slow);
        this.connecting = null;
      }
      if (!this.up) this.scheduleRetry();
    })();
    return this.connecting;
  }

  /**
   * Resolves once this process's LISTEN connection is active, or once the current attempt has
   * failed or taken longer than `degradedPollMs` (long polls then run degraded until LISTEN is
   * back). Never rejects.
   */
  async listen(): Promise<void> {
    if (this.up || this.retryTimer) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.connect(),
      new Promise((r) => {
        timer = setTimeout(r, this.degradedPollMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /** How many long polls of this process wait on the VM now. */
  waiting(vmId: string): number {
    return this.emitter.listenerCount(vmId);
  }

  /**
   * Resolves "changed" when the VM changes, "resync" when it may have (the LISTEN connection came
   * back, or is down and `degradedPollMs` passed: the caller should look), false after `ms` or on
   * abort. The listener is registered synchronously, so a caller that called `listen()` first and
   * reads the VM *after* this call cannot miss a change that commits in between.
   */
  waitForChange(
    vmId: string,
    ms: number,
    signal?: AbortSignal,
  ): Promise<false | "changed" | "resync"> {
    return new Promise((resolve) => {
      const done = (changed: false | "changed" | "resync") => {
        clearTimeout(timer);
        this.emitter.off(vmId, onEvent);
        signal?.removeEventListener("abort", onAbort);
        resolve(changed);
      };
      const onEvent = (why?: typeof RESYNC) => done(why === RESYNC ? "resync" : "changed");
      const onAbort = () => done(false);
      const timer = setTimeout(() => done(false), ms);
      this.emitter.on(vmId, onEvent);
      if (signal?.aborted) return done(false);
      signal?.addEventListener("abort", onAbort, { once: true });
      if (!this.up) void this.listen();
    });
  }

  /** Closes the LISTEN connection (tests, shutdown). */
  async close(): Promise<void> {
    this.closed = true;
    this.stopDegraded();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.up = false;
    await this.client?.end({ timeout: 1 });
    this.client = null;
  }
}

// On globalThis: Next bundles the route handlers apart from server/web.ts (the agent gateway);
// both must share the one LISTEN connection.
const g = globalThis as unknown as { lablinkEvents?: VmEventHub };

/** The process's single LISTEN connection, opened on first use. */
export function getEventHub(): VmEventHub {
  g.lablinkEvents ??= new VmEventHub(getDatabase().sql);
  return g.lablinkEvents;
}
