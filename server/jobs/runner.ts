import { type JobResult, PgBoss } from "pg-boss";
import type { Db } from "../db/client";
import type { Logger } from "../log";
import { isDatabaseError } from "../metrics";
import { workerMetrics } from "../worker-metrics";
import type { AnyJob } from "./define";

/**
 * pg-boss, with our job definitions registered: one queue per job, its retry policy and timeout
 * on the queue, payloads validated before sending and again before running.
 */
export class JobRunner {
  readonly boss: PgBoss;
  private readonly jobs = new Map<string, AnyJob>();
  private stopping = false;

  constructor(
    connectionString: string,
    private readonly db: Db,
    private readonly log: Logger,
  ) {
    this.boss = new PgBoss({ connectionString, useListenNotify: true, max: 4 });
    this.boss.on("error", (err) => {
      // Connections cut while we (or Postgres) shut down are expected, not errors.
      if (this.stopping) log.debug({ err: String(err) }, "job runner error while stopping");
      else log.error({ err }, "job runner error");
    });
  }

  /** Marks the runner as shutting down (errors from closing connections become quiet). */
  beginStop(): void {
    this.stopping = true;
  }

  async start(definitions: AnyJob[]): Promise<void> {
    await this.boss.start();
    for (const def of definitions) {
      this.jobs.set(def.name, def);
      const options = {
        retryLimit: def.retry.limit,
        retryDelay: def.retry.delaySeconds,
        retryBackoff: def.retry.backoff,
        expireInSeconds: def.timeoutSeconds,
        notify: true,
      };
      await this.boss.createQueue(def.name, options).catch(() => undefined);
      await this.boss.updateQueue(def.name, options);
      // pg-boss NOTIFYs new jobs but not retries, which a notified worker then finds only at its
      // 30 s backstop poll: poll as often as the first retry delay (2 s at least).
      const workOptions =
        def.retry.limit > 0
          ? {
              perJobResults: true,
              notifyPollingIntervalSeconds: Math.max(2, Math.min(30, def.retry.delaySeconds)),
            }
          : { perJobResults: true };
      await this.boss.work<unknown>(def.name, workOptions, async (batch) => {
        const results: JobResult[] = [];
        const m = workerMetrics();
        for (const job of batch) {
          const log = this.log.child({ job: def.name, jobId: job.id });
          const parsed = def.schema.safeParse(job.data);
          if (!parsed.success) {
            // Retrying cannot fix a bad payload: fail it terminally, with the reason.
            log.error(
              { issues: parsed.error.issues },
              "invalid job payload; failing without retry",
            );
            const issues = parsed.error.issues.map(
              (i: { path: PropertyKey[]; message: string }) =>
                `${i.path.map(String).join(".")}: ${i.message}`,
            );
            m.jobs.inc({ job: def.name, outcome: "invalid" });
            results.push({
              id: job.id,
              status: "deadletter",
              output: { error: "invalid payload", issues },
            });
            continue;
          }
          const endTimer = m.jobSeconds.startTimer({ job: def.name });
          try {
            const output = await def.handler(parsed.data, { db: this.db, log, jobId: job.id });
            m.jobs.inc({ job: def.name, outcome: "completed" });
            results.push({ id: job.id, status: "completed", output: output ?? null });
          } catch (err) {
            m.jobs.inc({ job: def.name, outcome: "failed" });
            if (isDatabaseError(err)) m.dbErrors.inc();
            log.error({ err }, "job failed");
            const message = err instanceof Error ? err.message : String(err);
            results.push({ id: job.id, status: "failed", output: { error: message } });
          } finally {
            endTimer();
          }
        }
        return results;
      });
    }
  }

  /** Validates and enqueues a job. */
  async send(
    name: string,
    payload: unknown,
    options: { singletonKey?: string; singletonSeconds?: number } = {},
  ) {
    const def = this.jobs.get(name);
    if (!def) throw new Error(`unknown job ${name}`);
    return this.boss.send(name, def.schema.parse(payload) as object, options);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.boss.stop({ graceful: true, timeout: 5_000 });
  }
}
