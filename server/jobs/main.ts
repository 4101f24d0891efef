import path from "node:path";
import { and, sql as dsql, eq, inArray, notExists } from "drizzle-orm";
import { Ec2Fleet } from "../cloud/ec2/ec2";
import { LocalFleetDriver } from "../cloud/local/driver";
import { TerraformFleetDriver } from "../cloud/terraform/driver";
import { TerraformRunner } from "../cloud/terraform/runner";
import { getDatabase } from "../db/client";
import { fleets, operations } from "../db/schema";
import { recoveryMailSettings, reminderSettings } from "../domain/hold-reminders";
import { env } from "../env";
import { logger } from "../log";
import { startWorkerMetricsServer } from "../worker-metrics";
import { allJobs } from "./definitions";
import { startDispatcher } from "./dispatch";
import { settleOperations } from "./operations";
import { JobRunner } from "./runner";

/**
 * The worker: pg-boss jobs plus the timers that enqueue the periodic ones. Several workers may
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
    db,
    serverUrl: `http://127.0.0.1:${e.PORT}`,
    rootDir,
    stateDir: path.resolve(e.LABLINK_DATA_DIR, "local-fleet"),
    heartbeatIntervalS: e.LABLINK_HEARTBEAT_INTERVAL_S,
    log,
  });
  const ec2 = new Ec2Fleet();
  const terraform = new TerraformFleetDriver({
    db,
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
  await runner.start(
    allJobs({
      staleSeconds: e.LABLINK_AGENT_STALE_S,
      gpuSampleRetentionHours: e.LABLINK_GPU_SAMPLE_RETENTION_HOURS,
      drivers: { local, terraform },
      ec2,
      orphanPolicy: e.LABLINK_RECONCILE_ORPHANS,
      shutdown: shutdownSignal.signal,
      operations: { leaseSeconds: e.LABLINK_OPERATION_LEASE_S, renewMs: 2_000 },
      reminders: reminderSettings(e),
      recoveryMail: recoveryMailSettings(e),
    }),
  );
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

  const applyLocalFleets = async () => {
    const rows = await db
      .select({ id: fleets.id })
      .from(fleets)
      .where(
        and(
          eq(fleets.driver, "local"),
          eq(fleets.status, "active"),
          // A fleet with an operation in flight is that operation's to change.
          notExists(
            db
              .select({ one: dsql`1` })
              .from(operations)
              .where(
                and(
                  eq(operations.fleetId, fleets.id),
                  inArray(operations.status, ["queued", "running"]),
                ),
              ),
          ),
        ),
      );
    for (const f of rows)
      await runner.send(
        "fleet.apply",
        { fleetId: f.id },
        { singletonKey: f.id, singletonSeconds: 5 },
      );
  };
  const timers = [
    setInterval(() => {
      runner
        .send("vm.sweep-silent", {}, { singletonSeconds: 10 })
        .catch((err) => log.error({ err }, "sweep enqueue failed"));
    }, 10_000),
    // Automatic recovery looks every 30 s (the original every 60 s); thresholds are minutes.
    setInterval(() => {
      runner
        .send("vm.recover", {}, { singletonSeconds: 30 })
        .catch((err) => log.error({ err }, "recovery enqueue failed"));
    }, 30_000),
    // Scheduled fleet sizes start at most 15 s late.
    setInterval(() => {
      runner
        .send("fleet.run-schedules", {}, { singletonSeconds: 15 })
        .catch((err) => log.error({ err }, "schedule enqueue failed"));
    }, 15_000),
    // Warm pools: a claimed VM's replacement starts booting at most 15 s later.
    setInterval(() => {
      runner
        .send("fleet.warm-pool", {}, { singletonSeconds: 15 })
        .catch((err) => log.error({ err }, "warm pool enqueue failed"));
    }, 15_000),
    // Hold limits are whole minutes: checking every 30 s releases a VM at most that late.
    setInterval(() => {
      runner
        .send("vm.expire-holds", {}, { singletonSeconds: 30 })
        .catch((err) => log.error({ err }, "hold-limit enqueue failed"));
    }, 30_000),
    ...(e.LABLINK_RECONCILE_INTERVAL_S > 0
      ? [
          setInterval(() => {
            runner
              .send("fleet.reconcile", {}, { singletonSeconds: e.LABLINK_RECONCILE_INTERVAL_S })
              .catch((err) => log.error({ err }, "reconcile enqueue failed"));
          }, e.LABLINK_RECONCILE_INTERVAL_S * 1000),
        ]
      : []),
    // Old GPU samples go every 10 minutes (one worker at a time: singleton).
    setInterval(() => {
      runner
        .send("gpu-samples.prune", {}, { singletonSeconds: 600 })
        .catch((err) => log.error({ err }, "gpu sample prune enqueue failed"));
    }, 600_000),
    // Restart local agents that died (the local driver's "reboot").
    setInterval(
      () => applyLocalFleets().catch((err) => log.error({ err }, "local apply failed")),
      30_000,
    ),
  ];
  await applyLocalFleets();
  log.info("worker started");
  process.send?.({ type: "ready" });

  let stopping = false;
  const shutdown = async (reason: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ reason }, "worker stopping");
    runner.beginStop();
    for (const t of timers) clearInterval(t);
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
