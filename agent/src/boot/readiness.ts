import { readFile, stat } from "node:fs/promises";
import type { ReadinessInput } from "../../../server/protocol/agent";

/** The server's STARTUP_LINES_MAX and STARTUP_LINE_MAX (agent-protocol.ts; a test checks they match). */
export const STARTUP_LINES_MAX = 20;
export const STARTUP_LINE_MAX = 500;

export type ReadinessPaths = {
  /** Created by the bootstrap once the research container is up (and the script passed or was let through). */
  containerReadyFile: string;
  /** The bootstrap's startup result (below); null: not configured, the script's outcome is unknown. */
  startupResultFile: string | null;
};

/**
 * /run/lablink/startup-result.json, written by the bootstrap (terraform/user-data.sh.tftpl) and
 * by the local fleet's simulated boot for every outcome:
 * `{"status": "ok"|"failed"|"none", "exitCode": n|null, "finishedAt": ISO, "onError":
 * "fail"|"continue", "container": "up"|"down", "lastLines": [...]}`. `container: "down"`: the
 * research container is not running (never started, or stopped by policy `fail`).
 */
export type StartupResultFile = {
  status: "ok" | "failed" | "none";
  exitCode: number | null;
  finishedAt: string | null;
  onError: "fail" | "continue";
  container: "up" | "down";
  lastLines: string[];
};

// biome-ignore lint/suspicious/noControlCharactersInRegex: stripping them is the point
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/** Last lines as the protocol takes them: at most 20, each at most 500 characters, no controls. */
export function capLines(lines: readonly unknown[]): string[] {
  return lines
    .filter((l): l is string => typeof l === "string")
    .slice(-STARTUP_LINES_MAX)
    .map((l) => l.replace(/\t/g, " ").replace(CONTROL, "").slice(0, STARTUP_LINE_MAX));
}

/** Parses the result file leniently: anything unreadable or half-written is "no result yet". */
export function parseStartupResult(text: string): StartupResultFile | null {
  let raw: Record<string, unknown>;
  try {
    const parsed = JSON.parse(text) as unknown;
    if (!parsed || typeof parsed !== "object") return null;
    raw = parsed as Record<string, unknown>;
  } catch {
    return null;
  }
  const status = raw.status;
  if (status !== "ok" && status !== "failed" && status !== "none") return null;
  const code = raw.exitCode;
  const finishedAt =
    typeof raw.finishedAt === "string" && !Number.isNaN(Date.parse(raw.finishedAt))
      ? new Date(raw.finishedAt).toISOString()
      : null;
  return {
    status,
    exitCode: typeof code === "number" && Number.isInteger(code) ? code : null,
    finishedAt,
    // The bootstrap's default, as the fleet config's.
    onError: raw.onError === "fail" ? "fail" : "continue",
    container: raw.container === "down" ? "down" : "up",
    lastLines: Array.isArray(raw.lastLines) ? capLines(raw.lastLines) : [],
  };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** What the agent reports as `readiness`, from the two files. */
export async function readReadiness(paths: ReadinessPaths): Promise<ReadinessInput> {
  const [ready, text] = await Promise.all([
    exists(paths.containerReadyFile),
    paths.startupResultFile
      ? readFile(paths.startupResultFile, "utf8").catch(() => null)
      : Promise.resolve(null),
  ]);
  const result = text === null ? null : parseStartupResult(text);
  const startup: ReadinessInput["startup"] = result
    ? {
        status: result.status,
        exitCode: result.exitCode,
        onError: result.onError,
        ...(result.finishedAt ? { finishedAt: result.finishedAt } : {}),
        ...(result.lastLines.length > 0 ? { lastLines: result.lastLines } : {}),
      }
    : undefined;
  const container = ready
    ? "ready"
    : result &&
        (result.container === "down" || (result.status === "failed" && result.onError === "fail"))
      ? "failed"
      : "starting";
  return { container, ...(startup ? { startup } : {}) };
}

/** Keeps the latest reading; `refresh()` runs in the background like the boot timings. */
export class ReadinessSource {
  private current: ReadinessInput | null = null;
  private reading: Promise<void> | null = null;

  constructor(private readonly paths: ReadinessPaths) {}

  latest(): ReadinessInput | null {
    return this.current;
  }

  refresh(): Promise<void> {
    this.reading ??= readReadiness(this.paths)
      .then((r) => {
        this.current = r;
      })
      .catch(() => {})
      .finally(() => {
        this.reading = null;
      });
    return this.reading;
  }
}
