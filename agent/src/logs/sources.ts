import type { LogFields, Logger, Severity } from "../log";
import { formatAgentEntry, guessLevel, type LogShipper } from "./shipper";
import { FileTail } from "./tail";

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
  log: Logger;
}): { stop: () => Promise<void>; pollNow: () => Promise<void> } {
  const tails = options.files
    .filter((f): f is { source: "cloud-init" | "container"; path: string } => f.path !== null)
    .map(
      (f) =>
        new FileTail({
          path: f.path,
          maxLineChars: options.maxLineChars,
          // An agent restarted late in a boot ships the end of a long log, not all of it again.
          startBytes: 256 * 1024,
          onLine: (line) => options.shipper.push(f.source, guessLevel(line), line),
        }),
    );
  const pollNow = async () => {
    await Promise.all(tails.map((t) => t.poll()));
  };
  const timer = setInterval(() => void pollNow(), options.pollMs ?? 1_000);
  timer.unref();
  void pollNow();
  return {
    pollNow,
    stop: async () => {
      clearInterval(timer);
      await pollNow();
      await Promise.all(tails.map((t) => t.close()));
    },
  };
}
