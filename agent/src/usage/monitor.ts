import type { GpuSnapshot } from "../gpu/probe";
import type { BoundedCommand } from "../gpu/query";
import type { Logger } from "../log";
import { IdleTracker, needsDetails, type UsageReport, type UsageRules } from "./detect";
import type { ProcessLister } from "./processes";

/** Where "in use" and "idle since" come from; `sample()` never rejects. */
export interface UsageSource {
  sample(gpus: GpuSnapshot): Promise<UsageReport>;
}

/**
 * The real monitor: the process table (research software, SSH and CRD sessions), the GPU
 * utilisation of the latest reading, and optionally an input-idle command (e.g. `xprintidle` on
 * the remote desktop's display) that prints milliseconds since the last input.
 */
export class HostUsageMonitor implements UsageSource {
  private readonly tracker: IdleTracker;

  constructor(
    private readonly o: {
      rules: UsageRules;
      processes: ProcessLister;
      inputIdle?: { command: BoundedCommand; args: string[] } | null;
      log: Logger;
      now?: () => number;
    },
  ) {
    this.tracker = new IdleTracker(o.rules, this.now());
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  async sample(gpus: GpuSnapshot): Promise<UsageReport> {
    const at = this.now();
    const processes = await this.o.processes
      .list((comm) => needsDetails(comm, this.o.rules))
      .catch((err) => {
        this.o.log.warn("cannot list processes", { error: err });
        return [];
      });
    const utils = gpus.gpus.map((g) => g.utilizationPct).filter((u): u is number => u !== null);
    let lastInputAt: number | undefined;
    if (this.o.inputIdle) {
      const out = await this.o.inputIdle.command.run(this.o.inputIdle.args);
      const ms = out.kind === "ok" ? Number(out.stdout.trim()) : Number.NaN;
      // Unreadable (no display yet): treat as "no input ever", which lets the VM go idle.
      lastInputAt = Number.isFinite(ms) && ms >= 0 ? at - ms : 0;
    }
    return this.tracker.update({
      at,
      processes,
      gpuUtilPct: utils.length > 0 ? Math.max(...utils) : null,
      ...(lastInputAt === undefined ? {} : { lastInputAt }),
    });
  }
}

/**
 * The local fleet's simulated VM: no real sessions, so "in use" is "assigned to someone", and idle
 * follows the same rules on the simulated GPU's utilisation.
 */
export class AssignedUsageSource implements UsageSource {
  private lastActiveAt: number;

  constructor(
    private readonly assigned: () => boolean,
    private readonly idleAfterMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.lastActiveAt = now();
  }

  sample(): Promise<UsageReport> {
    const at = this.now();
    const inUse = this.assigned();
    if (inUse) this.lastActiveAt = at;
    return Promise.resolve({
      inUse,
      idleSince:
        !inUse && at - this.lastActiveAt >= this.idleAfterMs
          ? new Date(this.lastActiveAt).toISOString()
          : null,
      signals: inUse ? ["assigned"] : [],
    });
  }
}
