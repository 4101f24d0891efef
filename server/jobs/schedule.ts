import type { Db } from "../db/client";
import type { Logger } from "../log";
import type { AnyJob } from "./define";

type Send = (
  name: string,
  payload: unknown,
  options: { singletonKey?: string; singletonSeconds?: number },
) => Promise<unknown>;

/**
 * The worker's timers, built from each job's `schedule` (server/jobs/definitions.ts). Every
 * worker runs them; the singleton window makes one job of each run per window.
 */
export function startSchedules(deps: { db: Db; log: Logger; send: Send }, jobs: AnyJob[]) {
  const scheduled = jobs.filter((j) => j.schedule);
  const enqueue = async (job: AnyJob) => {
    const s = job.schedule;
    if (!s) return;
    const items = s.payloads
      ? await s.payloads(deps.db)
      : [{ payload: {}, singletonKey: undefined }];
    for (const item of items) {
      await deps.send(job.name, item.payload, {
        singletonSeconds: s.singletonSeconds,
        ...(item.singletonKey ? { singletonKey: item.singletonKey } : {}),
      });
    }
  };
  const fire = (job: AnyJob) =>
    enqueue(job).catch((err) => deps.log.error({ err, job: job.name }, "enqueue failed"));
  const timers = scheduled.map((job) =>
    setInterval(() => void fire(job), (job.schedule?.everySeconds ?? 0) * 1000),
  );
  return {
    /** Jobs scheduled `atStart`, enqueued once now (awaited, so start-up waits for them). */
    atStart: () => Promise.all(scheduled.filter((j) => j.schedule?.atStart).map(fire)),
    stop: () => {
      for (const t of timers) clearInterval(t);
    },
  };
}
