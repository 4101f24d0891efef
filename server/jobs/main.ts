import path from "node:path";
import { and, eq, inArray, ne } from "drizzle-orm";
import { Ec2Fleet } from "../cloud/ec2/ec2";
import { LocalFleetDriver } from "../cloud/local/driver";
import { LocalFleetOwnership, OwnedLocalDriver } from "../cloud/local/ownership";
import { TerraformFleetDriver } from "../cloud/terraform/driver";
import { TerraformRunner } from "../cloud/terraform/runner";
import { getDatabase } from "../db/client";
import { fleets, operations } from "../db/schema";
import { fleetLedger } from "../domain/convergence";
import { recoveryMailSettings, reminderSettings } from "../domain/hold-reminders";
import { env } from "../env";
import { logger } from "../log";
import { startWorkerMetricsServer } from "../worker-metrics";
import { allJobs } from "./definitions";
import { startDispatcher } from "./dispatch";
import { executeOperation, settleOperations } from "./operations";
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
  const ownership = new LocalFleetOwnership(e.DATABASE_URL);
  const ownedLocal = new OwnedLocalDriver(local, ownership);
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
    webhooks: { historyDays: e.LABLINK_WEBHOOK_HISTORY_DAYS },
    drivers: { local: ownedLocal, terraform },
    mayRunOperation: async (fleetId) => {
      const [f] = await db
        .select({ driver: fleets.driver })
        .from(fleets)
        .where(eq(fleets.id, fleetId));
      return f?.driver !== "local" || ownedLocal.mayRun(fleetId);
    },
    ec2,
    orphanPolicy: e.LABLINK_RECONCILE_ORPHANS,
    shutdown: shutdownSignal.signal,
    operations: { leaseSeconds: e.LABLINK_OPERATION_LEASE_S, renewMs: 2_000 },
    reminders: reminderSettings(e),
    recoveryMail: recoveryMailSettings(e),
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
    { log, send: (name, payload, options) => runner.send(name, payload, options) },
    jobs,
  );
  // Local fleets: this worker runs the agents of the fleets it owns (server/cloud/local/ownership.ts)
  // and nothing of the others. Every 5 s it takes fleets nobody owns (a new fleet, or one whose
  // worker died: its agents are started here within seconds), runs queued operations of its
  // fleets (other workers leave them queued), and every 30 s restarts its agents that died.
  let lastApply = 0;
  const localFleetTick = async () => {
    let rows: { id: string; status: string }[] = [];
    const before = new Set(ownership.ownedFleets());
    const owned = await ownership.sync(async () => {
      rows = await db
        .select({ id: fleets.id, status: fleets.status })
        .from(fleets)
        .where(and(eq(fleets.driver, "local"), ne(fleets.status, "destroyed")));
      return rows.map((r) => r.id);
    });
    for (const fleetId of local.fleetsWithAgents()) {
      if (owned.has(fleetId)) continue;
      log.warn({ fleetId }, "another worker owns this local fleet now; stopping its agents here");
      await local.stopAgents(fleetId);
    }
    if (owned.size === 0) return;
    const queued = await db
      .select({ id: operations.id })
      .from(operations)
      .where(and(eq(operations.status, "queued"), inArray(operations.fleetId, [...owned])))
      .orderBy(operations.createdAt);
    for (const op of queued) void runOwnedOperation(op.id);
    const due = Date.now() - lastApply >= 30_000;
    if (due) lastApply = Date.now();
    const busy = await db
      .select({ fleetId: operations.fleetId })
      .from(operations)
      .where(
        and(
          inArray(operations.fleetId, [...owned]),
          inArray(operations.status, ["queued", "running"]),
        ),
      );
    for (const r of rows) {
      // A fleet with an operation in flight is that operation's to change.
      if (!owned.has(r.id) || r.status !== "active") continue;
      if (busy.some((b) => b.fleetId === r.id)) continue;
      if (!due && before.has(r.id)) continue;
      const [fleet] = await db.select().from(fleets).where(eq(fleets.id, r.id));
      if (fleet) await local.apply(fleet);
    }
  };
  const runOwnedOperation = (id: string) =>
    executeOperation(
      {
        db,
        log,
        drivers: { local: ownedLocal, terraform },
        settings: { leaseSeconds: e.LABLINK_OPERATION_LEASE_S, renewMs: 2_000 },
        shutdown: shutdownSignal.signal,
      },
      id,
    ).catch((err) => log.error({ err, operationId: id }, "local fleet operation failed"));
  let ticking = false;
  const applyLocalFleets = async () => {
    if (ticking) return;
    ticking = true;
    try {
      await localFleetTick();
    } finally {
      ticking = false;
    }
  };
  const timers = [
    setInterval(
      () => applyLocalFleets().catch((err) => log.error({ err }, "local fleet tick failed")),
      e.LABLINK_LOCAL_FLEET_TICK_S * 1000,
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
    schedules.stop();
    for (const t of timers) clearInterval(t);
    metricsServer?.close();
    // Running operations stop (Terraform gets SIGINT) and go back to the queue for another worker.
    shutdownSignal.abort();
    await dispatcher.stop();
    // Give an interrupted Terraform its grace period to save state; the operation is then
    // queued again for the next worker.
    await settleOperations((e.LABLINK_TERRAFORM_CANCEL_GRACE_S + 5) * 1000);
    await ownedLocal.close();
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
