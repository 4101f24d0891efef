import pino from "pino";

/**
 * Structured logger. Secrets never reach it: the redact list is a second line of defence for
 * fields that should not have been logged in the first place.
 */
export const logger = pino({
  level: process.env.LOG_LEVEL ?? "info",
  base: { service: process.env.LABLINK_SERVICE ?? "lablink" },
  redact: {
    paths: [
      "token",
      "*.token",
      "authorization",
      "*.authorization",
      "headers.authorization",
      "crdCode",
      "*.crdCode",
      "pin",
      "*.pin",
      "password",
      "*.password",
    ],
    censor: "[redacted]",
  },
});

export type Logger = typeof logger;

export function childLogger(bindings: Record<string, unknown>): Logger {
  return logger.child(bindings);
}
