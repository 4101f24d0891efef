import { readFileSync } from "node:fs";
import { uptime } from "node:os";
import type { GpuReadingInput } from "../../../server/protocol/agent";
import type { Logger } from "../log";
import { assessGpu, type Health, type HealthThresholds, limitReasons, toReading } from "./health";
import { parseGpuQuery } from "./parse";
import { type BoundedCommand, type CommandOutcome, queryGpus } from "./query";
import type { SimulatedGpus } from "./simulate";
import { parseXidLog, xidReasons } from "./xid";

export type GpuSnapshot = {
  gpus: GpuReadingInput[];
  /** VM-level verdict: every GPU healthy, the expected number visible, nvidia-smi working. */
  health: Health;
  takenAt: Date;
  source: "nvidia-smi" | "simulated" | "none";
};

/** Where the loops get GPU readings. `refresh()` never rejects; `latest()` never blocks. */
export interface GpuSource {
  refresh(): Promise<GpuSnapshot>;
  latest(): GpuSnapshot;
  dispose(): void;
}

export const MESSAGES = {
  noDriver: "no NVIDIA driver (nvidia-smi not found)",
  timeout: "nvidia-smi timed out (hung driver?)",
  noGpus: "no GPUs visible",
  notProbed: "GPU probe has not completed yet",
} as const;

const firstLine = (text: string) =>
  text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .find((l) => l.length > 0) ?? "";

/**
 * Turns one nvidia-smi run into readings and a VM verdict. Pure, so every fixture can be checked
 * without spawning anything.
 */
export function assessGpuQuery(
  outcome: CommandOutcome,
  options: { thresholds: HealthThresholds; expectedGpus: number | null; extraReasons?: string[] },
): { gpus: GpuReadingInput[]; health: Health } {
  const reasons: string[] = [];
  let output: string | null = null;

  switch (outcome.kind) {
    case "ok":
      output = outcome.stdout;
      break;
    case "not-found":
      reasons.push(MESSAGES.noDriver);
      break;
    case "timeout":
      reasons.push(MESSAGES.timeout);
      break;
    case "spawn-error":
      reasons.push(`cannot run nvidia-smi (${outcome.code})`);
      break;
    case "failed": {
      const how =
        outcome.exitCode !== null ? `exit ${outcome.exitCode}` : `signal ${outcome.signal}`;
      const parsed = parseGpuQuery(outcome.output);
      const message = parsed.otherLines[0] ?? firstLine(outcome.output);
      reasons.push(`nvidia-smi failed (${how})${message ? `: ${message}` : ""}`);
      // Some failures still list the GPUs that answered (one GPU lost, the others fine).
      output = outcome.output;
      break;
    }
  }

  const gpus: GpuReadingInput[] = [];
  if (output !== null) {
    const parsed = parseGpuQuery(output);
    for (const line of outcome.kind === "ok" ? parsed.otherLines : parsed.otherLines.slice(1)) {
      reasons.push(`nvidia-smi: ${line}`);
    }
    for (const gpu of parsed.gpus) {
      const verdict = assessGpu(gpu, options.thresholds);
      gpus.push(toReading(gpu, verdict));
      for (const reason of verdict.reasons) reasons.push(`GPU ${gpu.index}: ${reason}`);
    }
    const expected = options.expectedGpus ?? 1;
    if (gpus.length < expected) {
      reasons.push(
        options.expectedGpus === null
          ? MESSAGES.noGpus
          : `${gpus.length} of ${expected} expected GPUs visible`,
      );
    }
  }
  reasons.push(...(options.extraReasons ?? []));
  return {
    gpus: gpus.slice(0, 64),
    health: { healthy: reasons.length === 0, reasons: limitReasons(reasons, 50) },
  };
}

const initialSnapshot = (): GpuSnapshot => ({
  gpus: [],
  health: { healthy: false, reasons: [MESSAGES.notProbed] },
  takenAt: new Date(),
  source: "none",
});

/** Reads real GPUs through nvidia-smi (and Xid events from dmesg when readable). */
export class NvidiaSmiProbe implements GpuSource {
  private current = initialSnapshot();
  private inFlight: Promise<GpuSnapshot> | null = null;
  private dmesg: BoundedCommand | null;
  private xid = { reasons: [] as string[], readAt: Number.NEGATIVE_INFINITY };

  constructor(
    private readonly options: {
      nvidiaSmi: BoundedCommand;
      /** `dmesg`, or null to skip Xid checks. */
      dmesg: BoundedCommand | null;
      thresholds: HealthThresholds;
      expectedGpus: number | null;
      xidWindowS: number;
      /** dmesg can be large; reading it every heartbeat is wasteful. */
      xidEveryMs?: number;
      log: Logger;
    },
  ) {
    this.dmesg = options.dmesg;
  }

  latest(): GpuSnapshot {
    return this.current;
  }

  /** Starts a probe unless one is running; both callers get the same result. */
  refresh(): Promise<GpuSnapshot> {
    if (!this.inFlight) {
      this.inFlight = this.probe().finally(() => {
        this.inFlight = null;
      });
    }
    return this.inFlight;
  }

  dispose(): void {
    this.options.nvidiaSmi.dispose();
    this.dmesg?.dispose();
  }

  private async probe(): Promise<GpuSnapshot> {
    const [outcome, extraReasons] = await Promise.all([
      queryGpus(this.options.nvidiaSmi),
      this.readXid(),
    ]);
    const { gpus, health } = assessGpuQuery(outcome, {
      thresholds: this.options.thresholds,
      expectedGpus: this.options.expectedGpus,
      extraReasons,
    });
    const previous = this.current;
    this.current = { gpus, health, takenAt: new Date(), source: "nvidia-smi" };
    const changed = previous.health.reasons.join("\n") !== health.reasons.join("\n");
    if (changed) {
      const log = this.options.log;
      if (health.healthy) log.info("GPUs healthy", { gpus: gpus.length });
      else log.warn("GPUs unhealthy", { reasons: health.reasons });
    }
    return this.current;
  }

  private async readXid(): Promise<string[]> {
    const dmesg = this.dmesg;
    if (!dmesg) return [];
    const now = Date.now();
    if (now - this.xid.readAt < (this.options.xidEveryMs ?? 60_000)) return this.xid.reasons;
    const outcome = await dmesg.run([]);
    if (outcome.kind === "timeout") return this.xid.reasons; // try again next time
    if (outcome.kind !== "ok") {
      // Usually kernel.dmesg_restrict=1 without CAP_SYSLOG: expected, not a fault.
      this.options.log.info("kernel log not readable; Xid events are not checked", {
        outcome: outcome.kind,
        detail: outcome.kind === "failed" ? firstLine(outcome.output) : undefined,
      });
      this.dmesg = null;
      return [];
    }
    const reasons = xidReasons(parseXidLog(outcome.stdout), {
      nowUptimeS: uptime(),
      windowS: this.options.xidWindowS,
    });
    this.xid = { reasons, readAt: now };
    return reasons;
  }
}

/** Simulated GPUs for the local fleet (LABLINK_SIMULATE_GPU). */
export class SimulatedProbe implements GpuSource {
  private current = initialSnapshot();

  constructor(
    private readonly gpus: SimulatedGpus,
    private readonly inUse: () => boolean,
    /**
     * Simulated GPU failures (local fleet, tests): while one of these files exists, every GPU
     * reports unhealthy with the file's first line as the reason. The local driver deletes
     * `gpu-fault` on a simulated reboot (a fault a reboot cures); `gpu-fault.persistent` stays.
     */
    private readonly faultFiles: readonly string[] = [],
  ) {}

  latest(): GpuSnapshot {
    return this.current;
  }

  private fault(): string | null {
    for (const file of this.faultFiles) {
      try {
        const line = readFileSync(file, "utf8").split("\n")[0]?.trim();
        return line || "simulated GPU failure";
      } catch {
        // No such file: no fault of this kind.
      }
    }
    return null;
  }

  refresh(): Promise<GpuSnapshot> {
    const fault = this.fault();
    const gpus = this.gpus.read(this.inUse());
    this.current = {
      gpus: fault
        ? gpus.map((g) => ({ ...g, healthy: false, reasons: [fault.slice(0, 200)] }))
        : gpus,
      health: fault
        ? { healthy: false, reasons: [fault.slice(0, 200)] }
        : { healthy: true, reasons: [] },
      takenAt: new Date(),
      source: "simulated",
    };
    return Promise.resolve(this.current);
  }

  dispose(): void {}
}
