import { readFileSync } from "node:fs";
import { rename, writeFile } from "node:fs/promises";
import type { LogFields, Logger, Severity } from "../log";
import { formatAgentEntry, guessLevel, type LogShipper } from "./shipper";
import { type FilePosition, FileTail } from "./tail";

function loadPositions(file: string | null): Record<string, FilePosition> {
  if (!file) return {};
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as unknown;
    return parsed && typeof parsed === "object" ? (parsed as Record<string, FilePosition>) : {};
  } catch {
    return {};
  }
}

/** Agent entries at this level and above are shipped (debug stays on the VM). */
const SHIPPED: Severity[] = ["info", "warn", "error"];

/** For createLogger's `tap`: hands the agent's own (already redacted) entries to the shipper. */
export function agentLogTap(shipper: LogShipper) {
  return (severity: Severity, entry: LogFields) => {
    if (!SHIPPED.includes(severity)) return;
    const at = typeof entry.time === "string" ? new Date(entry.time) : new Date();
    shipper.push("agent", severity, formatAgentEntry(entry), at);
  };
}

/**
 * Follows cloud-init's output log and the research container's log file into the shipper,
 * polling every `pollMs`. Missing files are waited for; see FileTail for rotation.
 */
export function tailFiles(options: {
  shipper: LogShipper;
  files: { source: "cloud-init" | "container"; path: string | null }[];
  maxLineChars: number;
  pollMs?: number;
  /** A JSON file remembering how far each file was read (in the state dir); null: none. */
  positionsFile: string | null;
  log: Logger;
}): { stop: () => Promise<void>; pollNow: () => Promise<void> } {
  const saved = loadPositions(options.positionsFile);
  const tails = options.files
    .filter((f): f is { source: "cloud-init" | "container"; path: string } => f.path !== null)
    .map((f) => ({
      path: f.path,
      tail: new FileTail({
        path: f.path,
        maxLineChars: options.maxLineChars,
        // Without a saved position (first start, or the file was replaced), ship the end of a
        // long log, not all of it: cloud-init's output log keeps every earlier boot's output.
        startBytes: 256 * 1024,
        resumeFrom: saved[f.path] ?? null,
        onLine: (line) => options.shipper.push(f.source, guessLevel(line), line),
      }),
    }));
  let written = JSON.stringify(saved);
  let saving = Promise.resolve();
  // One save at a time: the timer's poll and stop()'s last poll may overlap.
  const savePositions = () => {
    saving = saving.then(saveNow);
    return saving;
  };
  const saveNow = async () => {
    if (!options.positionsFile) return;
    const now: Record<string, FilePosition> = { ...saved };
    for (const t of tails) {
      const at = t.tail.checkpoint();
      if (at) now[t.path] = at;
    }
    const text = JSON.stringify(now);
    if (text === written) return;
    try {
      const tmp = `${options.positionsFile}.tmp`;
      await writeFile(tmp, text);
      await rename(tmp, options.positionsFile);
      written = text;
    } catch (err) {
      options.log.warn("could not save log file positions", { error: err });
    }
  };
  const pollNow = async () => {
    await Promise.all(tails.map((t) => t.tail.poll()));
    await savePositions();
  };
  const timer = setInterval(() => void pollNow(), options.pollMs ?? 1_000);
  timer.unref();
  void pollNow();
  return {
    pollNow,
    stop: async () => {
      clearInterval(timer);
      await pollNow();
      await Promise.all(tails.map((t) => t.tail.close()));
    },
  };
}
