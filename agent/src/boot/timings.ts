import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import type { BootTimingsInput } from "../../../server/protocol/agent";

export type BootTimingPaths = {
  /** /proc: `stat` there has the kernel's boot time (btime). */
  procRoot: string;
  /** /run/cloud-init: status.json (per-stage start/finish) and result.json (written at the end). */
  cloudInitDir: string;
  /** A file the research container creates when it is ready (its mtime is the moment). */
  containerReadyFile: string | null;
};

const iso = (unixSeconds: number) => new Date(Math.round(unixSeconds * 1000)).toISOString();

async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, "utf8"));
  } catch {
    // Missing (no cloud-init, not yet), unreadable or half-written: "unknown" for now.
    return undefined;
  }
}

/** Kernel boot time from /proc/stat's `btime` line, or now − /proc/uptime. */
export async function readBootedAt(procRoot: string): Promise<string | null> {
  try {
    const text = await readFile(join(procRoot, "stat"), "utf8");
    const m = /^btime\s+(\d+)\s*$/m.exec(text);
    if (m) return iso(Number(m[1]));
  } catch {
    // fall through to uptime
  }
  try {
    const up = Number((await readFile(join(procRoot, "uptime"), "utf8")).split(/\s+/)[0]);
    if (Number.isFinite(up) && up >= 0) return iso(Date.now() / 1000 - up);
  } catch {
    // neither: not Linux
  }
  return null;
}

type Stage = { start?: unknown; finished?: unknown; errors?: unknown };
type CloudInitStatusJson = { v1?: Record<string, unknown> & { stage?: unknown } };
type CloudInitResultJson = { v1?: { errors?: unknown; datasource?: unknown } };

const STAGES = ["init-local", "init", "modules-config", "modules-final"] as const;

/**
 * cloud-init's state from its own files (the formats `cloud-init status` reads):
 * - status.json `{"v1": {"stage": null|"init"..., "init-local": {"start", "finished", "errors"},
 *   "init": {...}, "modules-config": {...}, "modules-final": {...}, "datasource": ...}}`, with
 *   start/finished as Unix seconds (floats) or null;
 * - result.json `{"v1": {"datasource": ..., "errors": [...]}}`, written when the last stage ends.
 * A `disabled` file in the directory (cloud-init disabled by ds-identify) reads as "disabled".
 */
export async function readCloudInit(
  dir: string,
): Promise<Pick<BootTimingsInput, "cloudInitFinishedAt" | "cloudInitStatus">> {
  const status = (await readJson(join(dir, "status.json"))) as CloudInitStatusJson | undefined;
  const result = (await readJson(join(dir, "result.json"))) as CloudInitResultJson | undefined;
  const v1 = status?.v1;
  let finished: number | null = null;
  let stageErrors = 0;
  if (v1 && typeof v1 === "object") {
    for (const name of STAGES) {
      const stage = v1[name] as Stage | undefined;
      if (!stage || typeof stage !== "object") continue;
      if (Array.isArray(stage.errors)) stageErrors += stage.errors.length;
      if (typeof stage.finished === "number" && (finished === null || stage.finished > finished)) {
        finished = stage.finished;
      }
    }
  }
  if (result?.v1 && typeof result.v1 === "object") {
    const errors = Array.isArray(result.v1.errors) ? result.v1.errors.length : 0;
    let at = finished;
    if (at === null) {
      // Only result.json (status.json gone or unreadable): its mtime is when cloud-init ended.
      at = await stat(join(dir, "result.json")).then(
        (s) => s.mtimeMs / 1000,
        () => null,
      );
    }
    return {
      cloudInitFinishedAt: at === null ? null : iso(at),
      cloudInitStatus: errors + stageErrors > 0 ? "error" : "done",
    };
  }
  if (v1 && typeof v1 === "object")
    return { cloudInitFinishedAt: null, cloudInitStatus: "running" };
  const disabled = await stat(join(dir, "disabled")).then(
    () => true,
    () => false,
  );
  return { cloudInitFinishedAt: null, cloudInitStatus: disabled ? "disabled" : null };
}

/** The research container's ready marker: its mtime, or null while it does not exist. */
export async function readContainerReady(file: string | null): Promise<string | null> {
  if (!file) return null;
  try {
    return new Date((await stat(file)).mtimeMs).toISOString();
  } catch {
    return null;
  }
}

/** Reads every milestone; `agentStartedAt` is passed in (the process knows when it started). */
export async function readBootTimings(
  paths: BootTimingPaths,
  agentStartedAt: Date,
): Promise<BootTimingsInput> {
  const [bootedAt, cloudInit, containerReadyAt] = await Promise.all([
    readBootedAt(paths.procRoot),
    readCloudInit(paths.cloudInitDir),
    readContainerReady(paths.containerReadyFile),
  ]);
  return { bootedAt, ...cloudInit, containerReadyAt, agentStartedAt: agentStartedAt.toISOString() };
}

/** Same milestones? (Decides whether a heartbeat carries the timings again.) */
export function sameTimings(a: BootTimingsInput | null, b: BootTimingsInput | null): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Keeps the latest reading; `refresh()` runs in the background like the GPU probe. */
export class BootTimingsSource {
  private current: BootTimingsInput | null = null;
  private reading: Promise<void> | null = null;

  constructor(
    private readonly paths: BootTimingPaths,
    private readonly agentStartedAt: Date = new Date(),
  ) {}

  latest(): BootTimingsInput | null {
    return this.current;
  }

  refresh(): Promise<void> {
    this.reading ??= readBootTimings(this.paths, this.agentStartedAt)
      .then((t) => {
        this.current = t;
      })
      .catch(() => {})
      .finally(() => {
        this.reading = null;
      });
    return this.reading;
  }
}
