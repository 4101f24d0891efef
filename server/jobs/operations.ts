import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { and, eq } from "drizzle-orm";
import { type DriverRun, type FleetDriver, RunAborted, throwIfAborted } from "../cloud/driver";
import type { Db } from "../db/client";
import { type Operation, operations, vms } from "../db/schema";
import { getFleet, setFleetDesiredSize, setFleetStatus } from "../domain/fleets";
import {
  appendLogs,
  claimOperation,
  finishOperation,
  type LogLevel,
  renewLease,
  revertFleetStatus,
  setProgress,
} from "../domain/operations";
import { redact } from "../domain/redact";
import type { Logger } from "../log";
import { workerMetrics } from "../worker-metrics";

export type OperationSettings = {
  /** A worker that has not renewed its lease for this long is presumed dead. */
  leaseSeconds: number;
  /** How often the lease is renewed and a cancel request is looked for. */
  renewMs: number;
};

export const defaultOperationSettings: OperationSettings = { leaseSeconds: 30, renewMs: 2_000 };

export const workerId = `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;

/**
 * An operation's log as the driver sees it: lines are redacted, buffered and written in small
 * batches (one transaction each), so a chatty Terraform does not cost a round trip per line.
 */
export class OperationLog {
  private buffer: { line: string; level: LogLevel }[] = [];
  private readonly secrets = new Set<string>();
  private flushing: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly db: Db,
    private readonly operationId: string,
    private readonly log: Logger,
  ) {}

  addSecret(value: string) {
    if (value.length >= 8) this.secrets.add(value);
  }

  write(line: string, level: LogLevel = "info") {
    for (const part of line.split(/\r?\n/)) {
      if (part.trim() === "") continue;
      this.buffer.push({ line: redact(part, this.secrets), level });
    }
    if (this.buffer.length >= 100) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), 200);
  }

  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const batch = this.buffer;
    this.buffer = [];
    this.flushing = this.flushing.then(async () => {
      if (batch.length === 0) return;
      try {
        await appendLogs(this.db, this.operationId, batch);
      } catch (err) {
        this.log.error({ err, operationId: this.operationId }, "could not write operation log");
      }
    });
    return this.flushing;
  }
}

const inFlight = new Set<Promise<unknown>>();

/** Waits (up to `timeoutMs`) for this process's running operations to wind down. */
export async function settleOperations(timeoutMs: number): Promise<void> {
  if (inFlight.size === 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.allSettled([...inFlight]),
    new Promise((r) => {
      timer = setTimeout(r, timeoutMs);
    }),
  ]);
  clearTimeout(timer);
}

/**
 * Runs one operation if it is still queued: takes a lease, calls the fleet's driver, renews the
 * lease while it works, turns a cancel request into an abort, and records the outcome. Never
 * throws for a driver failure (the operation records it); a second delivery of the same job
 * finds the operation no longer queued and does nothing.
 */
export function executeOperation(
  deps: Parameters<typeof executeOperationNow>[0],
  operationId: string,
): Promise<{ status: string }> {
  const p = executeOperationNow(deps, operationId);
  inFlight.add(p);
  return p.finally(() => inFlight.delete(p));
}

async function executeOperationNow(
  deps: {
    db: Db;
    drivers: Partial<Record<string, FleetDriver>>;
    log: Logger;
    settings?: OperationSettings;
    /** Fires when the worker shuts down: the run stops and the operation is queued again. */
    shutdown?: AbortSignal;
    /**
     * Whether this worker may run operations on the fleet (a local fleet's agents live in the
     * one worker that owns it). When not, the operation stays queued for the owner.
     */
    mayRun?: (fleetId: string) => Promise<boolean>;
  },
  operationId: string,
): Promise<{ status: string }> {
  const { db } = deps;
  const settings = deps.settings ?? defaultOperationSettings;
  if (deps.mayRun) {
    const [queued] = await db
      .select({ fleetId: operations.fleetId })
      .from(operations)
      .where(and(eq(operations.id, operationId), eq(operations.status, "queued")));
    if (!queued) return { status: "not queued" };
    if (!(await deps.mayRun(queued.fleetId))) return { status: "left to the fleet's owner" };
  }
  const op = await claimOperation(db, operationId, workerId, settings.leaseSeconds);
  if (!op) return { status: "not queued" };
  const log = deps.log.child({ operationId, kind: op.kind });
  const oplog = new OperationLog(db, op.id, log);
  const abort = new AbortController();
  let why: "cancel" | "lost" | "shutdown" | null = null;
  const stop = (reason: typeof why) => {
    why ??= reason;
    abort.abort();
  };
  const onShutdown = () => stop("shutdown");
  deps.shutdown?.addEventListener("abort", onShutdown);
  if (deps.shutdown?.aborted) stop("shutdown");

  let renewing = false;
  const timer = setInterval(async () => {
    if (renewing) return;
    renewing = true;
    try {
      const r = await renewLease(db, op.id, workerId, settings.leaseSeconds);
      if (r.lost) stop("lost");
      else if (r.cancelRequested && !abort.signal.aborted) {
        oplog.write("cancel requested; stopping", "warn");
        stop("cancel");
      }
    } catch (err) {
      log.warn({ err }, "lease renewal failed");
    } finally {
      renewing = false;
    }
  }, settings.renewMs);

  let lastProgress = "";
  // Progress writes are chained so they land in order (the last one written is the latest).
  let progressWrites: Promise<void> = Promise.resolve();
  const run: DriverRun = {
    signal: abort.signal,
    log: (line, level) => oplog.write(line, level),
    progress: (p) => {
      const key = `${p.done}/${p.total}`;
      if (key === lastProgress) return;
      lastProgress = key;
      const value = { ...p };
      progressWrites = progressWrites.then(() =>
        setProgress(db, op.id, value).catch((err) => log.warn({ err }, "progress write failed")),
      );
    },
    secret: (v) => oplog.addSecret(v),
  };

  oplog.write(
    `${op.kind} started (attempt ${op.attempts} of ${op.maxAttempts}) on worker ${workerId}`,
  );
  let outcome: { status: "succeeded" | "failed" | "cancelled" | "queued"; error?: string };
  const started = performance.now();
  let driverName = "unknown";
  try {
    driverName = (await getFleet(db, op.fleetId))?.driver ?? "unknown";
    await perform(deps, op, run);
    outcome = { status: "succeeded" };
    oplog.write(`${op.kind} succeeded`);
  } catch (err) {
    const message = redact(err instanceof Error ? err.message : String(err));
    if (why === "shutdown") {
      outcome = { status: "queued" };
      oplog.write("the worker is shutting down; the operation is queued again", "warn");
    } else if (why === "cancel" || (err instanceof RunAborted && why !== "lost")) {
      outcome = { status: "cancelled", error: "cancelled" };
      oplog.write(`${op.kind} cancelled`, "warn");
    } else {
      outcome = { status: "failed", error: message };
      oplog.write(`${op.kind} failed: ${message}`, "error");
      log.warn({ err }, "operation failed");
    }
  } finally {
    clearInterval(timer);
    deps.shutdown?.removeEventListener("abort", onShutdown);
  }
  await oplog.flush();
  await progressWrites;
  const m = workerMetrics();
  const labels = { kind: op.kind, driver: driverName };
  m.operationSeconds.observe(labels, (performance.now() - started) / 1000);
  m.operations.inc({ ...labels, outcome: why === "lost" ? "lease_lost" : outcome.status });
  if (outcome.status === "failed" && driverName === "terraform")
    m.terraformFailures.inc({ kind: op.kind });
  if (why === "lost") return { status: "lease lost" };
  const finished = await finishOperation(db, op.id, workerId, outcome);
  if (finished && (outcome.status === "failed" || outcome.status === "cancelled")) {
    await revertFleetStatus(db, op, outcome.status === "failed");
  }
  return { status: outcome.status };
}

async function perform(
  deps: { db: Db; drivers: Partial<Record<string, FleetDriver>> },
  op: Operation,
  run: DriverRun,
) {
  const { db } = deps;
  const fleet = await getFleet(db, op.fleetId);
  if (!fleet) throw new Error("the fleet no longer exists");
  const driver = deps.drivers[fleet.driver];
  if (!driver) throw new Error(`no worker here runs the ${fleet.driver} driver`);
  throwIfAborted(run);
  switch (op.kind) {
    case "fleet.create":
    case "fleet.scale": {
      const size = typeof op.params.size === "number" ? op.params.size : fleet.desiredSize;
      const updated = await setFleetDesiredSize(db, fleet.id, size);
      run.log(`${fleet.name}: desired size ${size} (driver ${fleet.driver})`);
      await driver.apply(updated ?? fleet, run);
      await setFleetStatus(db, fleet.id, "active");
      return;
    }
    case "fleet.destroy": {
      run.log(`${fleet.name}: destroying every VM (driver ${fleet.driver})`);
      await driver.destroy(fleet, run);
      await setFleetStatus(db, fleet.id, "destroyed");
      return;
    }
    case "vm.terminate":
    case "vm.reboot": {
      if (!op.vmId) throw new Error("the operation names no VM");
      const [vm] = await db.select().from(vms).where(eq(vms.id, op.vmId));
      if (!vm) throw new Error("the VM no longer exists");
      if (op.kind === "vm.reboot")
        return driver.rebootVm(fleet, vm, run, { hard: op.params.cold === true });
      if (vm.state === "terminated") {
        run.log(`${vm.name} is already terminated`);
        return;
      }
      await driver.terminateVm(fleet, vm, run);
      return;
    }
    case "vm.replace": {
      // A root holder may have left anything behind: the machine goes, a new one takes its place
      // (the fleet's desired size is unchanged, so the apply creates exactly one).
      if (!op.vmId) throw new Error("the operation names no VM");
      const [vm] = await db.select().from(vms).where(eq(vms.id, op.vmId));
      if (!vm) throw new Error("the VM no longer exists");
      if (vm.state !== "terminated") await driver.terminateVm(fleet, vm, run);
      run.log(`${vm.name} terminated; creating its replacement`);
      await driver.apply(fleet, run);
      return;
    }
  }
}
