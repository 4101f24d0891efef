export type BackoffOptions = {
  baseMs: number;
  capMs: number;
  /** Floor under the jittered delay so a draw near 0 cannot turn retries into a busy loop. */
  minMs: number;
  random: () => number;
};

export const DEFAULT_BACKOFF: BackoffOptions = {
  baseMs: 1_000,
  capMs: 60_000,
  minMs: 100,
  random: Math.random,
};

/**
 * Exponential backoff with full jitter: a uniform draw from [0, min(cap, base * 2^attempt)].
 * Full jitter spreads a fleet of agents that lost the server at the same moment, so they do not
 * come back in lockstep and knock it over again.
 */
export function backoffDelay(attempt: number, options: Partial<BackoffOptions> = {}): number {
  const o = { ...DEFAULT_BACKOFF, ...options };
  // 2^attempt overflows to Infinity long before it matters; min() with the cap keeps it finite.
  const ceiling = Math.min(o.capMs, o.baseMs * 2 ** Math.max(0, attempt));
  return Math.min(o.capMs, Math.max(o.minMs, Math.floor(o.random() * ceiling)));
}

/** Counts consecutive failures of one loop; `reset()` after a success. */
export class Backoff {
  private attempt = 0;

  constructor(private readonly options: Partial<BackoffOptions> = {}) {}

  get failures(): number {
    return this.attempt;
  }

  next(): number {
    const delay = backoffDelay(this.attempt, this.options);
    this.attempt = Math.min(this.attempt + 1, 64);
    return delay;
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** Resolves after `ms`, or as soon as `signal` aborts (never rejects: callers check the signal). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Waits for `promise`, or gives up (resolving undefined) when `signal` aborts first. */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}

/**
 * A signal that aborts when `parent` does or after `timeoutMs`; call `done()` when the operation
 * ends to detach it. Written out instead of `AbortSignal.any()`: combined with a long-lived parent
 * (the agent's stop signal, alive for weeks) `any()` retains every child it ever made
 * (nodejs/node#55351), and the agent makes one per request.
 */
export function childSignal(
  parent: AbortSignal,
  timeoutMs: number,
): { signal: AbortSignal; done: () => void } {
  const controller = new AbortController();
  const onAbort = () => controller.abort(parent.reason);
  const timer = setTimeout(
    () => controller.abort(new DOMException("request timed out", "TimeoutError")),
    timeoutMs,
  );
  if (parent.aborted) controller.abort(parent.reason);
  else parent.addEventListener("abort", onAbort, { once: true });
  return {
    signal: controller.signal,
    done: () => {
      clearTimeout(timer);
      parent.removeEventListener("abort", onAbort);
    },
  };
}
