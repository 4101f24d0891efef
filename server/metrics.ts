import { createHash, timingSafeEqual } from "node:crypto";
import { sql } from "drizzle-orm";
import client from "prom-client";
import type { DbOrTx } from "./db/client";

/**
 * Prometheus metrics for the web process (`GET /api/metrics`): API calls and claims counted as
 * they happen, plus the fleet's state read from Postgres at each scrape (so every web process
 * reports the same VM counts; counters are per process, as Prometheus expects).
 *
 * One registry per process, kept on globalThis: Next bundles the route handlers apart from
 * server/web.ts (which serves agents' calls), and both must count into the same metrics.
 */
export type Metrics = {
  registry: client.Registry;
  apiCalls: client.Counter<"path" | "code">;
  apiSeconds: client.Histogram<"type">;
  claims: client.Counter<"outcome">;
  claimSeconds: client.Histogram<"outcome">;
  heartbeats: client.Counter<"code">;
  heartbeatSeconds: client.Histogram;
  longPollsOpen: client.Gauge;
  vms: client.Gauge<"fleet" | "state">;
  poolReady: client.Gauge<"fleet">;
  vmsUnhealthy: client.Gauge<"fleet">;
  vmsInUse: client.Gauge<"fleet">;
  vmsIdleHeld: client.Gauge<"fleet">;
  fleetDesired: client.Gauge<"fleet" | "driver" | "status">;
  operations: client.Gauge<"kind" | "status">;
  scrapeSeconds: client.Gauge;
  databaseUp: client.Gauge;
  dbErrors: client.Counter;
};

const g = globalThis as unknown as { lablinkMetrics?: Metrics };

/** Seconds: most calls take milliseconds; a long poll holds its request up to 30 s. */
const API_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30];

function create(): Metrics {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: "lablink_web_" });
  const registers = [registry];
  return {
    registry,
    apiCalls: new client.Counter({
      name: "lablink_api_calls_total",
      help: "tRPC procedure calls answered by this process, by procedure and result code.",
      labelNames: ["path", "code"],
      registers,
    }),
    apiSeconds: new client.Histogram({
      name: "lablink_api_call_duration_seconds",
      help: "Time to answer a tRPC procedure call (queries include agents' long polls).",
      labelNames: ["type"],
      buckets: API_BUCKETS,
      registers,
    }),
    claims: new client.Counter({
      name: "lablink_claims_total",
      help: "Claims by outcome: claimed, rejoined (the researcher already held a VM), or the refusal's code.",
      labelNames: ["outcome"],
      registers,
    }),
    claimSeconds: new client.Histogram({
      name: "lablink_claim_duration_seconds",
      help: "Time to answer a claim, by outcome.",
      labelNames: ["outcome"],
      buckets: API_BUCKETS,
      registers,
    }),
    heartbeats: new client.Counter({
      name: "lablink_agent_heartbeats_total",
      help: "Agent heartbeats answered by this process, by result code (OK, UNAUTHORIZED...).",
      labelNames: ["code"],
      registers,
    }),
    heartbeatSeconds: new client.Histogram({
      name: "lablink_agent_heartbeat_duration_seconds",
      help: "Time to answer an agent's heartbeat.",
      buckets: API_BUCKETS,
      registers,
    }),
    longPollsOpen: new client.Gauge({
      name: "lablink_agent_long_polls_open",
      help: "Agents' long polls this process holds open now.",
      registers,
    }),
    poolReady: new client.Gauge({
      name: "lablink_pool_ready",
      help: "VMs a researcher could claim now (ready, healthy, unheld), by active fleet.",
      labelNames: ["fleet"],
      registers,
    }),
    vms: new client.Gauge({
      name: "lablink_vms",
      help: "VMs by fleet and state (fleets not destroyed).",
      labelNames: ["fleet", "state"],
      registers,
    }),
    vmsUnhealthy: new client.Gauge({
      name: "lablink_vms_unhealthy",
      help: "VMs whose GPU or agent is unhealthy, by fleet (terminated VMs not counted).",
      labelNames: ["fleet"],
      registers,
    }),
    vmsInUse: new client.Gauge({
      name: "lablink_vms_in_use",
      help: "VMs whose agent reports a session or research process, by fleet.",
      labelNames: ["fleet"],
      registers,
    }),
    vmsIdleHeld: new client.Gauge({
      name: "lablink_vms_idle_held",
      help: "VMs held by a researcher whose agent reports them idle, by fleet.",
      labelNames: ["fleet"],
      registers,
    }),
    fleetDesired: new client.Gauge({
      name: "lablink_fleet_desired_size",
      help: "The size an admin asked for, by fleet, driver and status.",
      labelNames: ["fleet", "driver", "status"],
      registers,
    }),
    operations: new client.Gauge({
      name: "lablink_operations",
      help: "Provisioning operations queued or running, by kind and status.",
      labelNames: ["kind", "status"],
      registers,
    }),
    scrapeSeconds: new client.Gauge({
      name: "lablink_metrics_db_read_seconds",
      help: "Time the last scrape spent reading the fleet's state from Postgres.",
      registers,
    }),
    databaseUp: new client.Gauge({
      name: "lablink_database_up",
      help: "1 when the last scrape could read Postgres, 0 when it could not.",
      registers,
    }),
    dbErrors: dbErrorsCounter(registers),
  };
}

/** The process's metrics (created on first use). */
export function metrics(): Metrics {
  g.lablinkMetrics ??= create();
  return g.lablinkMetrics;
}

/** Shared by the web and worker registries: the same alert covers both processes. */
export function dbErrorsCounter(registers: client.Registry[]) {
  return new client.Counter({
    name: "lablink_db_errors_total",
    help: "Calls or jobs that failed on a Postgres error (refused connection, lost connection, query error).",
    registers,
  });
}

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
]);

/** Whether an error (or one it wraps: Drizzle wraps the driver's) came from Postgres. */
export function isDatabaseError(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; depth < 5 && e instanceof Error; depth++) {
    const code = (e as { code?: unknown }).code;
    if (e.name === "PostgresError" || (typeof code === "string" && CONNECTION_CODES.has(code)))
      return true;
    e = e.cause;
  }
  return false;
}

type Row = Record<string, unknown>;

/**
 * Reads the fleet's state into the gauges, then renders everything in the text format. When
 * Postgres cannot be read the process's own metrics are still served, with
 * `lablink_database_up 0`, so the outage shows as an alert rather than as a failed scrape.
 */
export async function renderMetrics(db: DbOrTx): Promise<{ contentType: string; body: string }> {
  const m = metrics();
  const started = performance.now();
  let rows: Row[][];
  try {
    rows = await Promise.all([
      db.execute<Row>(vmCountsQuery),
      db.execute<Row>(fleetQuery),
      db.execute<Row>(operationsQuery),
    ]);
    m.databaseUp.set(1);
  } catch {
    m.databaseUp.set(0);
    m.dbErrors.inc();
    rows = [[], [], []];
  }
  const [vmRows = [], fleetRows = [], opRows = []] = rows;
  m.scrapeSeconds.set((performance.now() - started) / 1000);

  // Reset first: a fleet destroyed or a state emptied since the last scrape must disappear.
  for (const gauge of [
    m.vms,
    m.vmsUnhealthy,
    m.vmsInUse,
    m.vmsIdleHeld,
    m.poolReady,
    m.fleetDesired,
    m.operations,
  ])
    gauge.reset();
  for (const r of vmRows) {
    const fleet = String(r.fleet);
    m.vms.set({ fleet, state: String(r.state) }, Number(r.n));
    m.vmsUnhealthy.inc({ fleet }, Number(r.unhealthy));
    m.vmsInUse.inc({ fleet }, Number(r.in_use));
    m.vmsIdleHeld.inc({ fleet }, Number(r.idle_held));
    m.poolReady.inc({ fleet }, Number(r.pool_ready));
  }
  for (const r of fleetRows) {
    const fleet = String(r.fleet);
    m.fleetDesired.set(
      { fleet, driver: String(r.driver), status: String(r.status) },
      Number(r.desired),
    );
    // Fleets without VMs still show, at 0.
    m.vmsUnhealthy.inc({ fleet }, 0);
    m.vmsInUse.inc({ fleet }, 0);
    m.vmsIdleHeld.inc({ fleet }, 0);
    if (r.status === "active") m.poolReady.inc({ fleet }, 0);
  }
  for (const r of opRows) {
    m.operations.set({ kind: String(r.kind), status: String(r.status) }, Number(r.n));
  }
  return { contentType: m.registry.contentType, body: await m.registry.metrics() };
}

const vmCountsQuery = sql`
  SELECT f.name AS fleet, v.state,
    count(*) AS n,
    count(*) FILTER (WHERE NOT v.healthy AND v.state <> 'terminated') AS unhealthy,
    count(*) FILTER (WHERE v.in_use) AS in_use,
    count(*) FILTER (WHERE v.holder_id IS NOT NULL AND v.idle_since IS NOT NULL) AS idle_held,
    count(*) FILTER (WHERE v.state = 'ready' AND v.healthy AND v.holder_id IS NULL) AS pool_ready
  FROM vms v JOIN fleets f ON f.id = v.fleet_id
  WHERE f.status <> 'destroyed'
  GROUP BY f.name, v.state`;

const fleetQuery = sql`
  SELECT name AS fleet, driver, status, desired_size AS desired
  FROM fleets WHERE status <> 'destroyed'`;

const operationsQuery = sql`
  SELECT kind, status, count(*) AS n FROM operations
  WHERE status IN ('queued', 'running') GROUP BY kind, status`;

/**
 * Whether a scrape may read the metrics: `Authorization: Bearer <LABLINK_METRICS_TOKEN>`, compared
 * in constant time. Without a configured token the endpoint is off.
 */
export function scrapeAllowed(
  header: string | null,
  token: string | undefined,
): "ok" | "off" | "denied" {
  if (!token) return "off";
  const m = /^Bearer (.+)$/.exec(header ?? "");
  if (!m?.[1]) return "denied";
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(m[1]), digest(token)) ? "ok" : "denied";
}
