import type { JobRunner } from "../server/jobs/runner";

/** Waits until pg-boss has finished the job (completed or failed) and returns it. */
export async function waitForJob(runner: JobRunner, queue: string, id: string, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = await runner.boss.getJobById(queue, id);
    if (job && ["completed", "failed"].includes(job.state)) return job;
    if (Date.now() > deadline) throw new Error(`job ${id} still ${job?.state}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Sends a job through the real queue and waits for it to finish. */
export async function runJob(runner: JobRunner, queue: string, payload: object = {}) {
  const id = await runner.send(queue, payload);
  if (!id) throw new Error(`${queue} was not enqueued`);
  return waitForJob(runner, queue, id);
}
