/** Longer lines are cut (Terraform diagnostics can be long; nothing useful is past this). */
export const MAX_LINE = 4_000;

// Agent tokens, AWS access keys and secrets, PEM blocks: redacted from every log line even if
// a driver forgot to register them as secrets.
const SECRET_PATTERNS: RegExp[] = [
  /lla_[0-9a-f]{32}_[A-Za-z0-9_-]{43}/g,
  /\b(?:AKIA|ASIA)[0-9A-Z]{16}\b/g,
  /(aws_secret_access_key|secret_key|password|token)(["']?\s*[:=]\s*["']?)[^\s"',}]{8,}/gi,
  /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----/g,
];

/** Removes secrets from a log line: known values first, then anything that looks like one. */
export function redact(line: string, secrets: Iterable<string> = []): string {
  let out = line;
  for (const s of secrets) if (s.length >= 8) out = out.split(s).join("[redacted]");
  for (const re of SECRET_PATTERNS) {
    out = out.replace(re, (_m, key?: string, sep?: string) =>
      typeof key === "string" && typeof sep === "string" ? `${key}${sep}[redacted]` : "[redacted]",
    );
  }
  return out.length > MAX_LINE ? `${out.slice(0, MAX_LINE)}… [line cut]` : out;
}
