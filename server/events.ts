import { EventEmitter } from "node:events";
import type postgres from "postgres";
import { getDatabase } from "./db/client";

/**
 * One LISTEN connection per server process, fanned out in memory to every agent long-poll this
 * process holds. Thousands of waiting agents cost one Postgres connection, not one each
 * (the original's scale ceiling, issue #240).
 */
export class VmEventHub {
  private readonly emitter = new EventEmitter();
  private listening: Promise<unknown> | null = null;

  constructor(private readonly sql: postgres.Sql) {
    this.emitter.setMaxListeners(0);
  }

  private ensureListening(): Promise<unknown> {
    this.listening ??= this.sql.listen("lablink_vm", (payload) => {
      try {
        const { id } = JSON.parse(payload) as { id: string };
        this.emitter.emit(id);
      } catch {
        // A malformed payload is not ours; ignore it.
      }
    });
    return this.listening;
  }

  /** Resolves once this process's LISTEN connection is active. */
  async listen(): Promise<void> {
    await this.ensureListening();
  }

  /** How many long polls of this process wait on the VM now. */
  waiting(vmId: string): number {
    return this.emitter.listenerCount(vmId);
  }

  /**
   * Resolves true when the VM changes, false after `ms` or on abort. The listener is registered
   * synchronously, so a caller that called `listen()` first and reads the VM *after* this call
   * cannot miss a change that commits in between.
   */
  waitForChange(vmId: string, ms: number, signal?: AbortSignal): Promise<boolean> {
    const changed = new Promise<boolean>((resolve) => {
      const done = (changed: boolean) => {
        clearTimeout(timer);
        this.emitter.off(vmId, onEvent);
        signal?.removeEventListener("abort", onAbort);
        resolve(changed);
      };
      const onEvent = () => done(true);
      const onAbort = () => done(false);
      const timer = setTimeout(() => done(false), ms);
      this.emitter.once(vmId, onEvent);
      if (signal?.aborted) return done(false);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    return this.ensureListening().then(() => changed);
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
