import { z } from "zod";
import type { FleetDriver } from "../cloud/driver";
import type { Ec2Api } from "../cloud/ec2/ec2";
import { runBookings } from "../domain/bookings";
import { finishByoRemovals } from "../domain/byo";
import { pruneGpuSamples } from "../domain/gpu-history";
import { markSilentAgents } from "../domain/health";
import { releaseExpiredHolds } from "../domain/hold-limits";
import { type ReminderSettings, sendHoldReminders } from "../domain/hold-reminders";
import { type OrphanPolicy, reconcileAll } from "../domain/reconcile";
import { type RecoveryNoticeMail, runRecovery } from "../domain/recovery";
import { applyRecurringSchedules } from "../domain/recurring-schedules";
import { runDueSchedules } from "../domain/schedules";
import { systemActor } from "../domain/vm-state";
import { reconcileWarmPools } from "../domain/warm-pool";
import { attemptDelivery, pruneWebhookDeliveries, WEBHOOK_MAX_ATTEMPTS } from "../domain/webhooks";
import { workerMetrics } from "../worker-metrics";
import { defineJob } from "./define";
import { executeOperation, type OperationSettings } from "./operations";

export type JobDeps = {
  staleSeconds: number;
  /** GPU samples older than this are deleted (LABLINK_GPU_SAMPLE_RETENTION_HOURS). */
  gpuSampleRetentionHours?: number;
  drivers: Partial<Record<string, FleetDriver>>;
  /** Whether this worker may run the fleet's operations (local fleets: only their owner). */
  mayRunOperation?: (fleetId: string) => Promise<boolean>;
  operations?: OperationSettings;
  /** Fires when the worker shuts down; running operations stop and are queued again. */
  shutdown?: AbortSignal;
  ec2?: Ec2Api;
  orphanPolicy?: OrphanPolicy;
  /** Email reminders before a limit releases a VM; absent without SMTP (or with a lead of 0). */
  reminders?: ReminderSettings;
  /** LABLINK_RECONCILE_INTERVAL_S; 0 or absent: reconciliation is not scheduled. */
  reconcileIntervalS?: number;
  /** How a held VM's holder is emailed before recovery reboots it; absent without SMTP. */
  recoveryMail?: RecoveryNoticeMail;
  /** Webhook retries: the first delay (doubled each time) and the attempts in all. */
  webhooks?: {
    retryDelaySeconds?: number;
    maxAttempts?: number;
    timeoutMs?: number;
    /** Finished deliveries older than this are deleted (LABLINK_WEBHOOK_HISTORY_DAYS). */
    historyDays?: number;
  };
};

/** Marks VMs whose agent went silent as unhealthy (they leave the pool until they speak again). */
export const sweepSilentAgents = (deps: JobDeps) =>
  defineJob({
    name: "vm.sweep-silent",
    schema: z.strictObject({}),
    retry: { limit: 0, delaySeconds: 0, backoff: false },
    timeoutSeconds: 60,
    schedule: { everySeconds: 10, singletonSeconds: 10 },
    handler: async (_payload, { db, log }) => {
      const ids = await markSilentAgents(db, deps.staleSeconds);
      if (ids.length > 0)
        log.warn({ count: ids.length }, "agents went silent; VMs marked unhealthy");
      // Bring-your-own machines taken out of LabLink: after as long as a silent agent is given,
      // their agents have heard the shutdown; their rows end and their tokens are revoked.
      const removed = await finishByoRemovals(db, deps.staleSeconds, systemActor);
      if (removed > 0) log.info({ count: removed }, "bring-your-own machines removed");
      return { marked: ids.length, byoRemoved: removed };
    },
  });

/**
 * Reboots, replaces or gives up on unhealthy, silent and stuck VMs per their fleet's recovery
 * policy (server/domain/recovery.ts). One runner at a time: pg-boss's singleton schedule and an
 * advisory lock inside runRecovery (a second worker's overlapping run skips).
 */
export const recoverVms = (deps: Pick<JobDeps, "recoveryMail"> = {}) =>
  defineJob({
    name: "vm.recover",
    schema: z.strictObject({}),
    retry: { limit: 0, delaySeconds: 0, backoff: false },
    timeoutSeconds: 5 * 60,
    // Automatic recovery looks every 30 s (the original every 60 s); thresholds are minutes.
    schedule: { everySeconds: 30, singletonSeconds: 30 },
    handler: async (_payload, { db, log }) => {
      const result = await runRecovery(db, { mail: deps.recoveryMail, log });
      if (result.skipped) return { skipped: "another worker is recovering" };
      const acted = result.outcomes.filter((o) => o.decision !== "wait");
      // Ids and steps only: holders are in the audit rows, not in the logs.
      if (acted.length > 0)
        log.info(
          { actions: acted.map((o) => ({ vmId: o.vmId, decision: o.decision, step: o.step })) },
          "recovery acted on VMs",
        );
      const count = (d: string) => result.outcomes.filter((o) => o.decision === d).length;
      return {
        acted: count("act"),
        notified: count("notify"),
        gaveUp: count("give_up"),
        recovered: count("recovered"),
        waiting: count("wait") + count("busy"),
      };
    },
  });

/**
 * Releases VMs held past their fleet's hold limit or idle past its idle limit (the agent wipes
 * them as in any release), then emails the holders whose VM a limit will release soon.
 */
export const expireHolds = (deps: Pick<JobDeps, "reminders"> = {}) =>
  defineJob({
    name: "vm.expire-holds",
    schema: z.strictObject({}),
    retry: { limit: 0, delaySeconds: 0, backoff: false },
    timeoutSeconds: 5 * 60,
    // Hold limits are whole minutes: checking every 30 s releases a VM at most that late.
    schedule: { everySeconds: 30, singletonSeconds: 30 },
    handler: async (_payload, { db, log }) => {
      const released = await releaseExpiredHolds(db);
      // Ids only: who held the VM is in the audit row, not in the logs.
      const ids = (reason: string) =>
        released.filter((r) => r.reason === reason).map((r) => r.vmId);
      if (released.length > 0)
        log.info(
          { holdExpired: ids("hold_expired"), idle: ids("idle") },
          "holds ended; VMs released",
        );
      if (!deps.reminders) return { released: released.length };
      const reminded = await sendHoldReminders(db, deps.reminders, log);
      if (reminded.length > 0)
        log.info({ vmIds: reminded.map((r) => r.vmId) }, "holders reminded of a coming release");
      return { released: released.length, reminded: reminded.length };
    },
  });

/**
 * Starts the scale (or destroy) operations of scheduled changes that are due, and applies the
 * recurring slots' boundaries (every 15 s).
 */
export const runSchedules = () =>
  defineJob({
    name: "fleet.run-schedules",
    schema: z.strictObject({}),
    retry: { limit: 0, delaySeconds: 0, backoff: false },
    timeoutSeconds: 60,
    // Scheduled fleet sizes start at most 15 s late.
    schedule: { everySeconds: 15, singletonSeconds: 15 },
    handler: async (_payload, { db, log }) => {
      const runs = await runDueSchedules(db);
      const count = (outcome: string) => runs.filter((r) => r.outcome === outcome).length;
      const done = count("done");
      const failed = count("failed");
      if (done > 0) log.info({ done }, "scheduled fleet sizes started");
      if (failed > 0)
        log.warn({ failed }, "scheduled fleet sizes failed; see the fleet's schedule");
      const recurring = await applyRecurringSchedules(db);
      for (const r of recurring.filter((x) => x.outcome !== "waiting"))
        log.info(
          { scheduleId: r.scheduleId, fleetId: r.fleetId, size: r.size, outcome: r.outcome },
          "recurring schedule boundary applied",
        );
      return {
        done,
        failed,
        waiting: count("waiting"),
        superseded: count("superseded"),
        recurring: recurring.filter((r) => r.outcome === "applied").length,
      };
    },
  });

/**
 * Keeps each warm-pool fleet's ready count (every 15 s). pg-boss's singleton keeps the queue to
 * one run per period; the advisory lock inside reconcileWarmPools keeps a second worker's run
 * (another period, a slow first run) from acting at the same time.
 */
export const warmPools = () =>
  defineJob({
    name: "fleet.warm-pool",
    schema: z.strictObject({}),
    retry: { limit: 0, delaySeconds: 0, backoff: false },
    timeoutSeconds: 60,
    // A claimed VM's replacement starts booting at most 15 s later.
    schedule: { everySeconds: 15, singletonSeconds: 15 },
    handler: async (_payload, { db, log }) => {
      const { locked, fleets: runs } = await reconcileWarmPools(db);
      if (locked) return { locked };
      const acted = runs.filter((r) => r.action !== "none");
      if (acted.length > 0)
        log.info(
          {
            fleets: acted.map((r) => ({
              fleetId: r.fleetId,
              action: r.action,
              size: r.targetSize,
            })),
          },
          "warm pools adjusted",
        );
      return { locked, acted: acted.length };
    },
  });

/**
 * Bookings: sets a ready VM aside for each booking within its lead window, turns bookers who did
 * not come within the grace period into no-shows (their VM goes back to the pool, they are
 * emailed when mail is configured), and releases running bookings' VMs at their end
 * (server/domain/bookings.ts). Each step is guarded, so two workers' runs do no harm.
 */
export const runBookingJob = (deps: Pick<JobDeps, "recoveryMail"> = {}) =>
  defineJob({
    name: "booking.activate",
    schema: z.strictObject({}),
    retry: { limit: 0, delaySeconds: 0, backoff: false },
    timeoutSeconds: 60,
    // Grace and lead are whole minutes: a booking's VM is held or let go at most 15 s late.
    schedule: { everySeconds: 15, singletonSeconds: 15 },
    handler: async (_payload, { db, log }) => {
      const run = await runBookings(db, { mail: deps.recoveryMail, log });
      // Booking ids only: who booked is in the audit rows.
      if (run.held.length + run.noShow.length + run.ended.length + run.lost.length > 0)
        log.info(run, "bookings acted on");
      return {
        held: run.held.length,
        noShow: run.noShow.length,
        ended: run.ended.length,
        lost: run.lost.length,
      };
    },
  });

/** Deletes GPU samples (VM detail charts) older than the retention period. */
export const pruneGpuSamplesJob = (deps: JobDeps) =>
  defineJob({
    name: "gpu-samples.prune",
    schema: z.strictObject({}),
    retry: { limit: 0, delaySeconds: 0, backoff: false },
    timeoutSeconds: 10 * 60,
    // One worker at a time prunes, every 10 minutes.
    schedule: { everySeconds: 600, singletonSeconds: 600 },
    handler: async (_payload, { db }) => ({
      deleted: await pruneGpuSamples(db, deps.gpuSampleRetentionHours ?? 24),
    }),
  });

/** Deletes finished webhook deliveries older than the history period. */
export const pruneWebhookDeliveriesJob = (deps: JobDeps) =>
  defineJob({
    name: "webhook-deliveries.prune",
    schema: z.strictObject({}),
    retry: { limit: 0, delaySeconds: 0, backoff: false },
    timeoutSeconds: 10 * 60,
    schedule: { everySeconds: 3600, singletonSeconds: 3600 },
    handler: async (_payload, { db }) => ({
      deleted: await pruneWebhookDeliveries(db, deps.webhooks?.historyDays ?? 30),
    }),
  });

/**
 * Runs one admin operation (create, scale, destroy, reboot, terminate) through its fleet's
 * driver. Idempotent: a second delivery finds the operation no longer queued and does nothing.
 */
export const runOperation = (deps: JobDeps) =>
  defineJob({
    name: "operation.run",
    schema: z.strictObject({ operationId: z.uuid() }),
    // The operation records driver failures itself; a retry covers only a lost database connection
    // before the operation was taken.
    retry: { limit: 2, delaySeconds: 5, backoff: true },
    timeoutSeconds: 4 * 60 * 60,
    handler: ({ operationId }, { db, log }) =>
      executeOperation(
        {
          db,
          log,
          drivers: deps.drivers,
          settings: deps.operations,
          shutdown: deps.shutdown,
          mayRun: deps.mayRunOperation,
        },
        operationId,
      ),
  });

/** Compares EC2 with the database for every cloud fleet (one worker at a time). */
export const reconcileFleets = (deps: JobDeps) =>
  defineJob({
    name: "fleet.reconcile",
    schema: z.strictObject({}),
    retry: { limit: 0, delaySeconds: 0, backoff: false },
    timeoutSeconds: 10 * 60,
    ...(deps.reconcileIntervalS
      ? {
          schedule: {
            everySeconds: deps.reconcileIntervalS,
            singletonSeconds: deps.reconcileIntervalS,
          },
        }
      : {}),
    handler: async (_payload, { db, log }) => {
      if (!deps.ec2) return { skipped: "no EC2 access in this worker" };
      // What exists comes from the terraform driver's describe() (EC2 by the fleet's tag).
      const driver = deps.drivers.terraform;
      const result = await reconcileAll(
        db,
        deps.ec2,
        deps.orphanPolicy ?? "report",
        driver ? (fleet) => driver.describe(fleet) : undefined,
      );
      if (result.skipped) return { skipped: "another worker is reconciling" };
      const findings = workerMetrics().reconcileFindings;
      for (const r of result.reports) {
        for (const [finding, list] of [
          ["orphan", r.orphans],
          ["ghost", r.ghosts],
          ["mismatch", r.mismatches],
          ["error", r.errors],
        ] as const)
          findings.inc({ fleet: r.fleet, finding }, list.length);
        if (r.orphans.length || r.ghosts.length || r.mismatches.length || r.errors.length)
          log.warn(r, "reconciliation found drift");
      }
      return {
        fleets: result.reports.length,
        orphans: result.reports.reduce((n, r) => n + r.orphans.length, 0),
        ghosts: result.reports.reduce((n, r) => n + r.ghosts.length, 0),
        mismatches: result.reports.reduce((n, r) => n + r.mismatches.length, 0),
        errors: result.reports.flatMap((r) => r.errors),
      };
    },
  });

/**
 * POSTs one webhook delivery, signed. A failed attempt throws so pg-boss retries it with
 * exponential backoff (30 s, 1 min, 2 min... by default); the last attempt records the failure
 * instead. Idempotent: a delivery no longer pending is skipped.
 */
export const deliverWebhook = (deps: Pick<JobDeps, "webhooks"> = {}) => {
  const maxAttempts = deps.webhooks?.maxAttempts ?? WEBHOOK_MAX_ATTEMPTS;
  return defineJob({
    name: "webhook.deliver",
    schema: z.strictObject({ deliveryId: z.uuid() }),
    retry: {
      limit: maxAttempts - 1,
      delaySeconds: deps.webhooks?.retryDelaySeconds ?? 30,
      backoff: true,
    },
    timeoutSeconds: 60,
    handler: async ({ deliveryId }, { db }) => {
      const count = (outcome: string) => workerMetrics().webhookDeliveries.inc({ outcome });
      try {
        const outcome = await attemptDelivery(db, deliveryId, {
          maxAttempts,
          timeoutMs: deps.webhooks?.timeoutMs,
        });
        if (outcome !== "skipped") count(outcome);
        return { outcome };
      } catch (err) {
        count("retrying");
        throw err;
      }
    },
  });
};

export const allJobs = (deps: JobDeps) => [
  reconcileFleets(deps),
  sweepSilentAgents(deps),
  recoverVms(deps),
  expireHolds(deps),
  runSchedules(),
  warmPools(),
  runBookingJob(deps),
  pruneGpuSamplesJob(deps),
  pruneWebhookDeliveriesJob(deps),
  runOperation(deps),
  deliverWebhook(deps),
];
