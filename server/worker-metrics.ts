import { createServer, type Server } from "node:http";
import client from "prom-client";
import { dbErrorsCounter, scrapeAllowed } from "./metrics";

/**
 * Prometheus metrics for the worker process: jobs, operations, reconciliation, recovery and
 * webhook deliveries, counted where they happen (the job runner wraps every handler; operation
 * outcomes are counted at the executor). Served by the worker's own small listener
 * (LABLINK_WORKER_METRICS_PORT), since the worker answers no HTTP otherwise.
 */
export type WorkerMetrics = {
  registry: client.Registry;
  jobs: client.Counter<"job" | "outcome">;
  jobSeconds: client.Histogram<"job">;
  operations: client.Counter<"kind" | "driver" | "outcome">;
  operationSeconds: client.Histogram<"kind" | "driver">;
  terraformFailures: client.Counter<"kind">;
  reconcileFindings: client.Counter<"fleet" | "finding">;
  recoveryActions: client.Counter<"action">;
  webhookDeliveries: client.Counter<"outcome">;
  dbErrors: client.Counter;
};

const g = globalThis as unknown as { lablinkWorkerMetrics?: WorkerMetrics };

/** Seconds: sweeps take milliseconds, Terraform applies take tens of minutes. */
const JOB_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600];

function create(): WorkerMetrics {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: "lablink_worker_" });
  const registers = [registry];
  return {
    registry,
    jobs: new client.Counter({
      name: "lablink_jobs_total",
      help: "Jobs run by this worker, by job and outcome (completed, failed, invalid).",
      labelNames: ["job", "outcome"],
      registers,
    }),
    jobSeconds: new client.Histogram({
      name: "lablink_job_duration_seconds",
      help: "Time a job's handler ran, by job.",
      labelNames: ["job"],
      buckets: JOB_BUCKETS,
      registers,
    }),
    operations: new client.Counter({
      name: "lablink_operations_finished_total",
      help: "Operations this worker ran to an end, by kind, fleet driver and outcome.",
      labelNames: ["kind", "driver", "outcome"],
      registers,
    }),
    operationSeconds: new client.Histogram({
      name: "lablink_operation_duration_seconds",
      help: "Time an operation ran on this worker, by kind and fleet driver.",
      labelNames: ["kind", "driver"],
      buckets: JOB_BUCKETS,
      registers,
    }),
    terraformFailures: new client.Counter({
      name: "lablink_terraform_failures_total",
      help: "Operations on Terraform fleets that failed, by operation kind.",
      labelNames: ["kind"],
      registers,
    }),
    reconcileFindings: new client.Counter({
      name: "lablink_reconcile_findings_total",
      help: "Drift found by reconciliation, by fleet and finding (orphan, ghost, mismatch, error).",
      labelNames: ["fleet", "finding"],
      registers,
    }),
    recoveryActions: new client.Counter({
      name: "lablink_recovery_actions_total",
      help: "Operations whose worker died, by action taken (requeued, failed).",
      labelNames: ["action"],
      registers,
    }),
    webhookDeliveries: new client.Counter({
      name: "lablink_webhook_deliveries_total",
      help: "Webhook delivery attempts by outcome (delivered, retrying, failed: gave up).",
      labelNames: ["outcome"],
      registers,
    }),
    dbErrors: dbErrorsCounter(registers),
  };
}

/** The worker's metrics (created on first use). */
export function workerMetrics(): WorkerMetrics {
  g.lablinkWorkerMetrics ??= create();
  return g.lablinkWorkerMetrics;
}

/**
 * Serves GET /metrics behind the same bearer token as the web process's endpoint. Without a
 * token every request is refused: the worker never serves metrics unauthenticated.
 */
export function startWorkerMetricsServer(o: {
  port: number;
  host: string;
  token: string | undefined;
}): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
      res.writeHead(404).end();
      return;
    }
    const allowed = scrapeAllowed(req.headers.authorization ?? null, o.token);
    if (allowed !== "ok") {
      res.writeHead(allowed === "off" ? 404 : 401).end();
      return;
    }
    const m = workerMetrics();
    m.registry.metrics().then(
      (body) => res.writeHead(200, { "content-type": m.registry.contentType }).end(body),
      () => res.writeHead(500).end(),
    );
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.host, () => {
      server.off("error", reject);
      resolve(server);
    });
  });
}
