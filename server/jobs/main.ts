import path from "node:path";
import { Ec2Fleet } from "../cloud/ec2/ec2";
import { LocalFleetDriver } from "../cloud/local/driver";
import { TerraformFleetDriver } from "../cloud/terraform/driver";
import { TerraformRunner } from "../cloud/terraform/runner";
import { getDatabase } from "../db/client";
import { fleetLedger } from "../domain/convergence";
import { reminderSettings } from "../domain/hold-reminders";
import { env } from "../env";
import { logger } from "../log";
import { startWorkerMetricsServer } from "../worker-metrics";
import { allJobs } from "./definitions";
import { startDispatcher } from "./dispatch";
import { settleOperations } from "./operations";
import { JobRunner } from "./runner";
import { startSchedules } from "./schedule";

/**
 * The worker: pg-boss jobs plus the timers that enqueue the periodic ones (each job's schedule). Several workers may
 * run; Postgres hands each job to one. The local fleet's agent processes live in this process.
 */
async function main() {
  const e = env();
  if (!e.DATABASE_URL)
    throw new Error("DATABASE_URL is not set (npm start sets it for embedded Postgres).");
  const log = logger.child({ process: "worker" });
  const { db, sql } = getDatabase();
  const rootDir = path.resolve(import.meta.dirname, "../..");
  const local = new LocalFleetDriver({
    ledger: fleetLedger(db),
    serverUrl: `http://127.0.0.1:${e.PORT}`,
    rootDir,
    stateDir: path.resolve(e.LABLINK_DATA_DIR, "local-fleet"),
    heartbeatIntervalS: e.LABLINK_HEARTBEAT_INTERVAL_S,
    log,
  });
  const ec2 = new Ec2Fleet();
  const terraform = new TerraformFleetDriver({
    ledger: fleetLedger(db),
    runner: new TerraformRunner({
      bin: e.LABLINK_TERRAFORM_BIN,
      cancelGraceMs: e.LABLINK_TERRAFORM_CANCEL_GRACE_S * 1000,
    }),
    moduleDir: path.join(rootDir, "terraform"),
    workDir: path.resolve(
      e.LABLINK_TERRAFORM_WORK_DIR ?? path.join(e.LABLINK_DATA_DIR, "terraform"),
    ),
    backend:
      e.LABLINK_TERRAFORM_BACKEND === "s3"
        ? {
            kind: "s3",
            bucket: e.LABLINK_TERRAFORM_S3_BUCKET as string,
            region: e.LABLINK_TERRAFORM_S3_REGION,
            lockTable: e.LABLINK_TERRAFORM_S3_LOCK_TABLE,
          }
        : { kind: "local" },
    // Agents on cloud VMs must reach the server at its public address.
    serverUrl: e.LABLINK_PUBLIC_URL ?? "",
    agentImage: e.LABLINK_AGENT_IMAGE,
    ec2,
  });
  const runner = new JobRunner(e.DATABASE_URL, db, log);
  const shutdownSignal = new AbortController();
  const jobs = allJobs({
    staleSeconds: e.LABLINK_AGENT_STALE_S,
    gpuSampleRetentionHours: e.LABLINK_GPU_SAMPLE_RETENTION_HOURS,
    drivers: { local, terraform },
    ec2,
    orphanPolicy: e.LABLINK_RECONCILE_ORPHANS,
    shutdown: shutdownSignal.signal,
    operations: { leaseSeconds: e.LABLINK_OPERATION_LEASE_S, renewMs: 2_000 },
    reminders: reminderSettings(e),
    reconcileIntervalS: e.LABLINK_RECONCILE_INTERVAL_S,
  });
  await runner.start(jobs);
  const dispatcher = await startDispatcher({ db, sql, runner, log });
  const metricsServer = e.LABLINK_WORKER_METRICS_PORT
    ? await startWorkerMetricsServer({
        port: e.LABLINK_WORKER_METRICS_PORT,
        host: e.LABLINK_WORKER_METRICS_HOST,
        token: e.LABLINK_METRICS_TOKEN,
      })
    : null;
  if (metricsServer && !e.LABLINK_METRICS_TOKEN)
    log.warn("LABLINK_WORKER_METRICS_PORT is set without LABLINK_METRICS_TOKEN: metrics are off");

  const schedules = startSchedules(
    { db, log, send: (name, payload, options) => runner.send(name, payload, options) },
    jobs,
  );
  await schedules.atStart();
  log.info("worker started");
  process.send?.({ type: "ready" });

  let stopping = false;
  const shutdown = async (reason: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ reason }, "worker stopping");
    runner.beginStop();
    schedules.stop();
    metricsServer?.close();
    // Running operations stop (Terraform gets SIGINT) and go back to the queue for another worker.
    shutdownSignal.abort();
    await dispatcher.stop();
    // Give an interrupted Terraform its grace period to save state; the operation is then
    // queued again for the next worker.
    await settleOperations((e.LABLINK_TERRAFORM_CANCEL_GRACE_S + 5) * 1000);
    await local.close();
    await runner.stop().catch(() => undefined);
    await sql.end({ timeout: 5 });
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  // A closed terminal sends SIGHUP to the whole process group; stop as on Ctrl-C.
  process.on("SIGHUP", () => void shutdown("SIGHUP"));
  // Started by `npm start` with an IPC channel: if the parent dies, so do we (and our agents).
  process.on("disconnect", () => void shutdown("parent exited"));
}

main().catch((err) => {
  logger.fatal({ err }, "worker failed to start");
  process.exit(1);
});
