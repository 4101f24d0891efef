import type { z } from "zod";
import type { Db } from "../db/client";
import type { Logger } from "../log";

export type JobContext = { db: Db; log: Logger; jobId: string };

/** A periodic job's cadence; server/jobs/schedule.ts turns it into the worker's timers. */
export type JobSchedule = {
  /** How often every worker enqueues it. */
  everySeconds: number;
  /**
   * pg-boss's singleton window: however many workers enqueue the job, one runs per window.
   */
  singletonSeconds: number;
};

/**
 * A job is data: a name, a payload schema, a retry policy, a timeout, an idempotent handler and,
 * for periodic jobs, its schedule. An invalid payload fails at once without retrying.
 */
export type JobDefinition<S extends z.ZodType> = {
  name: string;
  schema: S;
  retry: { limit: number; delaySeconds: number; backoff: boolean };
  timeoutSeconds: number;
  handler: (payload: z.infer<S>, ctx: JobContext) => Promise<unknown>;
  /** Absent: enqueued on demand only (operations, webhook deliveries). */
  schedule?: JobSchedule;
};

export function defineJob<S extends z.ZodType>(def: JobDefinition<S>): JobDefinition<S> {
  return def;
}

// biome-ignore lint/suspicious/noExplicitAny: a heterogeneous list of job definitions
export type AnyJob = JobDefinition<any>;
