/**
 * Domain errors carry a code the API layer maps to a tRPC code in one place
 * (server/api/trpc.ts). Messages are written for the person who will read them.
 */
export const domainErrorCodes = {
  NOT_FOUND: "NOT_FOUND",
  ILLEGAL_TRANSITION: "BAD_REQUEST",
  STATE_CONFLICT: "CONFLICT",
  NO_CAPACITY: "PRECONDITION_FAILED",
  /** The server lacks a setting the request needs (e.g. LABLINK_AGENT_IMAGE for terraform fleets). */
  NOT_CONFIGURED: "PRECONDITION_FAILED",
  /** A fleet's weekly GPU-hour quota is used up for this researcher. */
  QUOTA_EXCEEDED: "FORBIDDEN",
  ALREADY_EXISTS: "CONFLICT",
  /** The action cannot be done on this kind of fleet (e.g. rebooting a bring-your-own machine). */
  NOT_SUPPORTED: "PRECONDITION_FAILED",
  INVALID_INPUT: "BAD_REQUEST",
  UNAUTHORIZED: "UNAUTHORIZED",
  FORBIDDEN: "FORBIDDEN",
  /** details.retryAfterS becomes the Retry-After header. */
  RATE_LIMITED: "TOO_MANY_REQUESTS",
} as const;

export type DomainErrorCode = keyof typeof domainErrorCodes;

export class DomainError extends Error {
  constructor(
    readonly code: DomainErrorCode,
    message: string,
    /** Safe, structured facts for API clients (never secrets). */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = "DomainError";
  }
}

export function isDomainError(e: unknown): e is DomainError {
  return e instanceof DomainError;
}
