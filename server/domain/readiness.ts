import type { ReadinessInput } from "../protocol/agent";

/**
 * What the server does with a VM whose agent reported its research container and startup script:
 * - `wait`: not claimable yet (the container is starting or the script still runs);
 * - `ready`: into service, with a warning for admins when a failed script was let through
 *   (the fleet's on-error policy `continue`);
 * - `failed`: never claimable (policy `fail` and the script failed, or no container came up).
 */
export type ReadinessVerdict =
  | { kind: "wait" }
  | { kind: "ready"; warning: string | null }
  | { kind: "failed"; reason: string; issue: string };

// Control characters (ANSI colour codes, carriage returns) would garble the admin pages.
// biome-ignore lint/suspicious/noControlCharactersInRegex: stripping them is the point
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/** The script's last lines as shown to admins: control characters out, tabs as spaces. */
export function cleanStartupLines(lines: readonly string[] | undefined): string[] {
  return (lines ?? []).map((l) => l.replace(/\t/g, " ").replace(CONTROL, "").trimEnd());
}

function describeStartup(s: NonNullable<ReadinessInput["startup"]>): string {
  const how =
    s.exitCode === null || s.exitCode === undefined ? "failed" : `exited with code ${s.exitCode}`;
  return `the fleet's startup script ${how} (on error: ${s.onError})`;
}

function withLines(summary: string, lines: string[]): string {
  return lines.length > 0 ? `${summary}; last output:\n${lines.join("\n")}` : summary;
}

/** The rule, without the database: claimable only when the container is up and the script passed. */
export function readinessVerdict(r: ReadinessInput): ReadinessVerdict {
  const s = r.startup;
  const lines = cleanStartupLines(s?.lastLines);
  if (s?.status === "failed" && s.onError === "fail") {
    const reason = describeStartup(s);
    return { kind: "failed", reason, issue: withLines(reason, lines) };
  }
  if (r.container === "failed") {
    const reason =
      s?.status === "failed"
        ? `the research container did not come up: ${describeStartup(s)}`
        : "the research container did not come up";
    return { kind: "failed", reason, issue: withLines(reason, lines) };
  }
  if (r.container !== "ready") return { kind: "wait" };
  if (s?.status === "failed")
    return { kind: "ready", warning: withLines(describeStartup(s), lines) };
  return { kind: "ready", warning: null };
}
