import { type ChildProcess, type ExecFileException, execFile } from "node:child_process";
import { childEnv } from "../child-env";

/**
 * The `--query-gpu` fields, in the order the parser expects them. Verified on an H200 with driver
 * 580.159.04 (test/fixtures/nvidia-smi/h200-*.csv). `clocks_event_reasons` is the current name of
 * `clocks_throttle_reasons` (drivers >= 535 accept both).
 */
export const GPU_QUERY_FIELDS = [
  "index",
  "uuid",
  "name",
  "driver_version",
  "temperature.gpu",
  "utilization.gpu",
  "utilization.memory",
  "memory.used",
  "memory.total",
  "power.draw",
  "power.limit",
  "clocks_event_reasons.active",
  "ecc.errors.uncorrected.volatile.total",
  "pcie.link.gen.current",
  "pcie.link.width.current",
  "clocks.sm",
  "clocks.max.sm",
  "pstate",
  "fan.speed",
  "retired_pages.pending",
  "remapped_rows.pending",
  "remapped_rows.failure",
  "temperature.memory",
] as const;

export type GpuQueryField = (typeof GPU_QUERY_FIELDS)[number];

export const GPU_QUERY_ARGS = [
  `--query-gpu=${GPU_QUERY_FIELDS.join(",")}`,
  "--format=csv,noheader,nounits",
];

export type CommandOutcome =
  | { kind: "ok"; stdout: string }
  /** The binary does not exist (ENOENT). */
  | { kind: "not-found" }
  /** Killed after the timeout; `stillRunning` when an earlier run is still stuck, so none was started. */
  | { kind: "timeout"; stillRunning: boolean }
  | { kind: "failed"; exitCode: number | null; signal: string | null; output: string }
  /** Could not be started for another reason (EACCES, ...). */
  | { kind: "spawn-error"; code: string; message: string };

const MAX_OUTPUT_CHARS = 2_000;

/**
 * Runs one fixed executable with an argv array (never a shell) under a hard timeout.
 *
 * On timeout the child is SIGKILLed and the promise resolves at once, even if the child does not
 * die: a GPU wedged in the driver leaves nvidia-smi in uninterruptible sleep, and `execFile`'s own
 * callback would then never fire. While such a child lingers, further runs report a timeout without
 * starting another process, so a hung driver cannot pile up stuck processes every heartbeat.
 */
export class BoundedCommand {
  private readonly lingering = new Set<ChildProcess>();

  constructor(
    readonly file: string,
    private readonly timeoutMs: number,
    private readonly maxBuffer = 4 * 1024 * 1024,
  ) {}

  run(args: readonly string[]): Promise<CommandOutcome> {
    for (const child of this.lingering) {
      if (child.exitCode !== null || child.signalCode !== null) this.lingering.delete(child);
    }
    if (this.lingering.size > 0) return Promise.resolve({ kind: "timeout", stillRunning: true });

    return new Promise((resolve) => {
      let settled = false;
      const finish = (outcome: CommandOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(outcome);
      };
      const child = execFile(
        this.file,
        [...args],
        {
          encoding: "utf8",
          maxBuffer: this.maxBuffer,
          windowsHide: true,
          // A minimal environment: the agent's token must not leak into child processes, and
          // LC_ALL=C keeps decimal points as "." in nvidia-smi's numbers.
          env: childEnv({ PATH: process.env.PATH ?? "/usr/bin:/bin", LC_ALL: "C", LANG: "C" }),
        },
        (err: ExecFileException | null, stdout: string, stderr: string) => {
          this.lingering.delete(child);
          if (!err) return finish({ kind: "ok", stdout });
          if (err.code === "ENOENT") return finish({ kind: "not-found" });
          if (typeof err.code === "string" && err.code !== "ERR_CHILD_PROCESS_STDIO_MAXBUFFER") {
            return finish({ kind: "spawn-error", code: err.code, message: err.message });
          }
          finish({
            kind: "failed",
            exitCode: typeof err.code === "number" ? err.code : null,
            signal: err.signal ?? null,
            output: `${stdout}${stderr}`.trim().slice(0, MAX_OUTPUT_CHARS),
          });
        },
      );
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        this.lingering.add(child);
        finish({ kind: "timeout", stillRunning: false });
      }, this.timeoutMs);
    });
  }

  /** Kills children left over from timed-out runs (on shutdown). */
  dispose(): void {
    for (const child of this.lingering) child.kill("SIGKILL");
    this.lingering.clear();
  }
}

/** Runs the GPU query once. */
export function queryGpus(nvidiaSmi: BoundedCommand): Promise<CommandOutcome> {
  return nvidiaSmi.run(GPU_QUERY_ARGS);
}
