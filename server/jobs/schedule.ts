import type { Logger } from "../log";
import type { AnyJob } from "./define";

type Send = (
  name: string,
  payload: unknown,
  options: { singletonSeconds?: number },
) => Promise<unknown>;

/**
 * The worker's timers, built from each job's `schedule` (server/jobs/definitions.ts). Every
 * worker runs them; the singleton window makes one job of each run per window.
 */
export function startSchedules(deps: { log: Logger; send: Send }, jobs: AnyJob[]) {
  const scheduled = jobs.filter((j) => j.schedule);
  const enqueue = async (job: AnyJob) => {
    const s = job.schedule;
    if (!s) return;
    await deps.send(job.name, {}, { singletonSeconds: s.singletonSeconds });
  };
  const fire = (job: AnyJob) =>
    enqueue(job).catch((err) => deps.log.error({ err, job: job.name }, "enqueue failed"));
  const timers = scheduled.map((job) =>
    setInterval(() => void fire(job), (job.schedule?.everySeconds ?? 0) * 1000),
  );
  return {
    stop: () => {
      for (const t of timers) clearInterval(t);
    },
  };
}
