/**
 * JSON-lines logger: one object per line on stdout, `{time, level, msg, ...fields}`. The agent runs
 * under systemd/journald or the local fleet runner, both of which keep stdout, so no transport.
 */
const SEVERITIES = ["debug", "info", "warn", "error"] as const;
export type Severity = (typeof SEVERITIES)[number];
/** LOG_LEVEL values; "silent" (used by the test runner) logs nothing. */
export const LOG_LEVELS = [...SEVERITIES, "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(bindings: LogFields): Logger;
}

/** Keys whose values never reach the log, even if a caller passes them by mistake. */
const SECRET_KEY = /token|authorization|secret|password|cookie|^pin$/i;

function sanitize(value: unknown, depth = 0): unknown {
  if (value instanceof Error) {
    const out: LogFields = { name: value.name, message: value.message };
    const code = (value as { code?: unknown }).code;
    if (code !== undefined) out.code = code;
    if (value.cause !== undefined && depth < 3) out.cause = sanitize(value.cause, depth + 1);
    return out;
  }
  if (Array.isArray(value)) return depth > 4 ? "[array]" : value.map((v) => sanitize(v, depth + 1));
  if (value !== null && typeof value === "object") {
    if (depth > 4) return "[object]";
    const out: LogFields = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = SECRET_KEY.test(k) ? "[redacted]" : sanitize(v, depth + 1);
    }
    return out;
  }
  if (typeof value === "bigint") return value.toString();
  return value;
}

export function createLogger(
  options: {
    level?: LogLevel;
    bindings?: LogFields;
    write?: (line: string) => void;
    now?: () => Date;
    /** Sees every entry written (already redacted), e.g. to ship it to the server. */
    tap?: (severity: Severity, entry: LogFields) => void;
  } = {},
): Logger {
  const level = options.level ?? "info";
  const min = level === "silent" ? Number.POSITIVE_INFINITY : SEVERITIES.indexOf(level);
  const write = options.write ?? ((line: string) => process.stdout.write(line));
  const now = options.now ?? (() => new Date());
  const bindings = options.bindings ?? {};

  const emit = (severity: Severity, msg: string, fields?: LogFields) => {
    if (SEVERITIES.indexOf(severity) < min) return;
    const entry: LogFields = { time: now().toISOString(), level: severity, msg };
    for (const [k, v] of Object.entries(sanitize({ ...bindings, ...fields }) as LogFields)) {
      if (!(k in entry)) entry[k] = v;
    }
    write(`${JSON.stringify(entry)}\n`);
    options.tap?.(severity, entry);
  };

  return {
    debug: (msg, fields) => emit("debug", msg, fields),
    info: (msg, fields) => emit("info", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    error: (msg, fields) => emit("error", msg, fields),
    child: (more) => createLogger({ ...options, bindings: { ...bindings, ...more } }),
  };
}

/** For tests and library callers that do not care about logs. */
export const silentLogger: Logger = createLogger({ write: () => {} });
