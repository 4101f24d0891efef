import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import type { FleetDriver } from "../../server/cloud/driver";
import { claimOperation, requestOperation } from "../../server/domain/operations";
import { systemActor } from "../../server/domain/vm-state";
import { defineJob } from "../../server/jobs/define";
import { allJobs } from "../../server/jobs/definitions";
import { startDispatcher } from "../../server/jobs/dispatch";
import { executeOperation } from "../../server/jobs/operations";
import { JobRunner } from "../../server/jobs/runner";
import { logger } from "../../server/log";
import { startWorkerMetricsServer, workerMetrics } from "../../server/worker-metrics";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet } from "../fixtures";
import { runJob } from "../jobs";

let t: TestDatabase;
let runner: JobRunner;

const failing = defineJob({
  name: "test.always-fails",
  schema: z.strictObject({}),
  retry: { limit: 0, delaySeconds: 0, backoff: false },
  timeoutSeconds: 30,
  handler: async () => {
    throw new Error("on purpose");
  },
});

beforeAll(async () => {
  t = await createTestDatabase();
  runner = new JobRunner(t.url, t.db, logger);
  await runner.start([...allJobs({ staleSeconds: 60, drivers: {} }), failing]);
});
afterAll(async () => {
  await runner?.stop();
  await t?.drop();
});

async function sample(name: string, labels: Record<string, string> = {}) {
  const metric = await workerMetrics().registry.getSingleMetric(name)?.get();
  const found = metric?.values.find(
    (v) =>
      (!("metricName" in v) || v.metricName === name) &&
      Object.entries(labels).every(([k, val]) => String(v.labels[k]) === val),
  );
  return found?.value ?? 0;
}

describe("worker metrics", () => {
  it("counts every job the runner runs by outcome, and times them", async () => {
    const done = { job: "vm.sweep-silent", outcome: "completed" };
    const failed = { job: "test.always-fails", outcome: "failed" };
    const before = {
      done: await sample("lablink_jobs_total", done),
      failed: await sample("lablink_jobs_total", failed),
    };
    expect((await runJob(runner, "vm.sweep-silent")).state).toBe("completed");
    expect((await runJob(runner, "test.always-fails")).state).toBe("failed");
    expect(await sample("lablink_jobs_total", done)).toBe(before.done + 1);
    expect(await sample("lablink_jobs_total", failed)).toBe(before.failed + 1);
    const text = await workerMetrics().registry.metrics();
    expect(text).toMatch(/^lablink_job_duration_seconds_count\{job="vm.sweep-silent"\} [1-9]/m);
  });

  it("serves them on its own listener, only to the bearer token", async () => {
    const token = "a-worker-metrics-token-0123";
    const server = await startWorkerMetricsServer({ port: 0, host: "127.0.0.1", token });
    const { port } = server.address() as AddressInfo;
    const url = `http://127.0.0.1:${port}/metrics`;
    try {
      const ok = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
      expect(ok.status).toBe(200);
      const body = await ok.text();
      expect(body).toContain("# HELP lablink_jobs_total");
      expect(body).toContain("lablink_worker_process_resident_memory_bytes");
      expect((await fetch(url)).status).toBe(401);
      expect((await fetch(url, { headers: { authorization: "Bearer wrong" } })).status).toBe(401);
      expect(
        (
          await fetch(`http://127.0.0.1:${port}/other`, {
            headers: { authorization: `Bearer ${token}` },
          })
        ).status,
      ).toBe(404);
    } finally {
      server.close();
    }
  });

  it("counts operations by kind, driver and outcome at the executor, and Terraform failures", async () => {
    const broken = {
      name: "terraform",
      apply: async () => {
        throw new Error("terraform apply exited 1");
      },
    } as unknown as FleetDriver;
    const fine = { name: "local", apply: async () => undefined } as unknown as FleetDriver;
    const tf = await makeFleet(t.db, { name: "metrics-tf", driver: "terraform" });
    const local = await makeFleet(t.db, { name: "metrics-local" });
    const failed = { kind: "fleet.scale", driver: "terraform", outcome: "failed" };
    const ok = { kind: "fleet.scale", driver: "local", outcome: "succeeded" };
    const before = {
      failed: await sample("lablink_operations_finished_total", failed),
      ok: await sample("lablink_operations_finished_total", ok),
      tf: await sample("lablink_terraform_failures_total", { kind: "fleet.scale" }),
    };
    const deps = { db: t.db, drivers: { terraform: broken, local: fine }, log: logger };
    for (const fleet of [tf, local]) {
      const op = await requestOperation(t.db, {
        fleetId: fleet.id,
        kind: "fleet.scale",
        params: { size: 1 },
        actor: systemActor,
      });
      await executeOperation(deps, op.id);
    }
    expect(await sample("lablink_operations_finished_total", failed)).toBe(before.failed + 1);
    expect(await sample("lablink_operations_finished_total", ok)).toBe(before.ok + 1);
    expect(await sample("lablink_terraform_failures_total", { kind: "fleet.scale" })).toBe(
      before.tf + 1,
    );
    const text = await workerMetrics().registry.metrics();
    expect(text).toMatch(
      /^lablink_operation_duration_seconds_count\{kind="fleet.scale",driver="terraform"\} [1-9]/m,
    );
  });

  it("counts the recovery of operations whose worker died, by action", async () => {
    const fleet = await makeFleet(t.db, { name: "metrics-recovery" });
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.scale",
      params: { size: 0 },
      actor: systemActor,
      maxAttempts: 1,
    });
    // Taken by a worker whose lease has already run out.
    await claimOperation(t.db, op.id, "dead-worker", -1);
    const before = await sample("lablink_recovery_actions_total", { action: "failed" });
    const dispatcher = await startDispatcher({
      db: t.db,
      sql: t.sql,
      runner,
      log: logger,
      sweepMs: 60_000,
    });
    await dispatcher.stop();
    expect(await sample("lablink_recovery_actions_total", { action: "failed" })).toBe(before + 1);
  });
});
