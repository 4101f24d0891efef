/**
 * Heartbeat benchmark: N simulated agents send `agent.heartbeat` over HTTP keep-alive to a running
 * server (bench/heartbeat-server.ts: the real tRPC fetch handler and agent-token auth, its own
 * process) on real Postgres. Every VM has its own agent token and is registered through
 * `agent.register` first. pgbench runs on the same database server in the same run.
 *
 *   npm run bench:heartbeat -- [--vms 10000] [--interval 15] [--duration 45] [--ramp]
 *                              [--ramp-start 500] [--ramp-step 500] [--step-seconds 10]
 *                              [--connections 64] [--workers 1] [--pool 10] [--pgbench-seconds 10] [--no-pgbench]
 *                              [--pg-port 54350]
 *
 * Steady mode: N agents, each every `interval` seconds (N / interval heartbeats per second,
 * spread evenly), for `duration` seconds. Ramp mode: the rate goes up by `ramp-step` every
 * `step-seconds` until p95 exceeds 50 ms, a request fails or the server falls behind; the highest
 * rate that passed is the maximum. The load is open-loop: latency counts from when a heartbeat was
 * due, so a server that falls behind shows it. See bench/README.md.
 *
 * Exit code: 0 when every heartbeat in the steady run was answered 200 and the database shows
 * every VM's latest heartbeat, 1 otherwise, 2 on a setup error.
 */
import { type ChildProcess, fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import postgres from "postgres";
import superjson from "superjson";
import { issueAgentToken } from "../server/auth/agent-tokens";
import { createDatabase } from "../server/db/client";
import { WEB_NODE_FLAGS } from "../server/runtime-flags";
import {
  CLK_TCK_MS,
  cpuMeter,
  f0,
  f1,
  percentile,
  pgbench,
  positiveInt,
  table,
  withScratchPostgres,
} from "./lib";
import { RawHttpClient } from "./raw-http";

const BENCH_DB = "lablink_bench_hb";
const PGBENCH_DB = "lablink_pgbench_hb";
const EMBEDDED_DIR = ".data/bench-heartbeat";
const TARGET_RATE = 3000;
const TARGET_P95_MS = 50;

function readOptions() {
  const { values } = parseArgs({
    options: {
      vms: { type: "string" },
      interval: { type: "string" },
      duration: { type: "string" },
      ramp: { type: "boolean", default: false },
      "ramp-start": { type: "string" },
      "ramp-step": { type: "string" },
      "step-seconds": { type: "string" },
      "ramp-max": { type: "string" },
      connections: { type: "string" },
      workers: { type: "string" },
      pool: { type: "string" },
      "pgbench-seconds": { type: "string" },
      "no-pgbench": { type: "boolean", default: false },
      "pg-port": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(
      "usage: npm run bench:heartbeat -- [--vms 10000] [--interval 15] [--duration 45] [--ramp] [--ramp-start 500] [--ramp-step 500] [--step-seconds 10] [--ramp-max 20000] [--connections 64] [--workers 1] [--pool 10] [--pgbench-seconds 10] [--no-pgbench] [--pg-port 54350]",
    );
    process.exit(0);
  }
  return {
    vms: positiveInt("vms", values.vms, 10_000),
    intervalS: positiveInt("interval", values.interval, 15),
    durationS: positiveInt("duration", values.duration, 45),
    ramp: values.ramp ?? false,
    rampStart: positiveInt("ramp-start", values["ramp-start"], 500),
    rampStep: positiveInt("ramp-step", values["ramp-step"], 500),
    stepS: positiveInt("step-seconds", values["step-seconds"], 10),
    rampMax: positiveInt("ramp-max", values["ramp-max"], 20_000),
    connections: positiveInt("connections", values.connections, 64),
    workers: positiveInt("workers", values.workers, 1),
    pool: positiveInt("pool", values.pool, 10),
    pgbenchSeconds: positiveInt("pgbench-seconds", values["pgbench-seconds"], 10),
    pgbench: !values["no-pgbench"],
    pgPort: positiveInt("pg-port", values["pg-port"], 54350),
  };
}
type Options = ReturnType<typeof readOptions>;

// ---------------------------------------------------------------------------------------------
// The server process: CPU and memory from /proc

/** CPU of the server: its primary and every worker. */
function serverCpuMs(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + processCpuMs(pid), 0);
}

function serverRssMiB(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + processRssMiB(pid), 0);
}

function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * CLK_TCK_MS;
}

function processRssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m?.[1] ? Number(m[1]) / 1024 : Number.NaN;
}

async function startServer(
  databaseUrl: string,
  opts: Options,
): Promise<{ child: ChildProcess; port: number; pids: number[] }> {
  const child = fork(path.resolve(import.meta.dirname, "heartbeat-server.ts"), [], {
    // The web process's flags (server/runtime-flags.ts) unless BENCH_NODE_FLAGS says otherwise
    // (BENCH_NODE_FLAGS=" " for Node's defaults).
    execArgv: [
      "--import",
      "tsx",
      ...(process.env.BENCH_NODE_FLAGS?.split(" ").filter(Boolean) ?? WEB_NODE_FLAGS),
    ],
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      BENCH_POOL: String(opts.pool),
      BENCH_WORKERS: String(opts.workers),
      LABLINK_HEARTBEAT_INTERVAL_S: String(opts.intervalS),
      LOG_LEVEL: process.env.LOG_LEVEL ?? "warn",
      NODE_ENV: "production",
    },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const { port, pids } = await new Promise<{ port: number; pids: number[] }>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`bench server exited with ${code}`)));
    child.on("message", (m: { type?: string; port?: number; pids?: number[] }) => {
      if (m.type === "ready" && m.port) resolve({ port: m.port, pids: m.pids ?? [] });
    });
  });
  const all = [...new Set([child.pid as number, ...pids])];
  return { child, port, pids: all };
}

// ---------------------------------------------------------------------------------------------
// Simulated agents

type Agent = { vmId: string; token: string; bootId: string };

function gpuReading(vmId: string) {
  return {
    index: 0,
    uuid: `GPU-${vmId}`,
    name: "NVIDIA A10G",
    temperatureC: 40 + Math.round(Math.random() * 30),
    utilizationPct: Math.round(Math.random() * 100),
    memoryUsedMiB: Math.round(Math.random() * 20_000),
    memoryTotalMiB: 23_028,
    powerDrawW: 60 + Math.round(Math.random() * 100),
    healthy: true,
    reasons: [],
  };
}

type Sample = { ms: number; ok: boolean; status: number; reRegister?: boolean };

/**
 * The request body, as the agent's tRPC client sends it: superjson's `{ json }` envelope (plain
 * JSON values need no `meta`), with a fresh GPU reading each time.
 */
function heartbeatBody(a: Agent): string {
  return JSON.stringify({
    json: {
      vmId: a.vmId,
      bootId: a.bootId,
      gpus: [gpuReading(a.vmId)],
      health: { healthy: true, reasons: [] },
      inUse: false,
      idleSince: null,
    },
  });
}

const HEARTBEAT_PATH = "/api/trpc/agent.heartbeat";

/**
 * Open-loop load: heartbeat k is due at start + k / rate and goes to agent k mod N (so each agent
 * beats every N / rate seconds). Latency is measured from when it was due, not from when a socket
 * became free, so queueing in the client or the server is part of it.
 */
async function drive(
  client: RawHttpClient,
  agents: Agent[],
  rate: number,
  seconds: number,
  offset: number,
): Promise<{ samples: Sample[]; wallMs: number; late: number }> {
  const samples: Sample[] = [];
  const inFlight = new Set<Promise<void>>();
  const total = Math.round(rate * seconds);
  const t0 = performance.now();
  let sent = 0;
  let late = 0;
  while (sent < total) {
    const now = performance.now();
    const due = Math.min(total, Math.floor(((now - t0) / 1000) * rate) + 1);
    while (sent < due) {
      const dueAt = t0 + (sent / rate) * 1000;
      if (now - dueAt > 1000) late++;
      const agent = agents[(offset + sent) % agents.length] as Agent;
      const p = client
        .post(HEARTBEAT_PATH, `Bearer ${agent.token}`, heartbeatBody(agent))
        .then(({ status }) => {
          samples.push({ ms: performance.now() - dueAt, ok: status === 200, status });
        })
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
      sent++;
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  await Promise.all(inFlight);
  return { samples, wallMs: performance.now() - t0, late };
}

type Step = {
  rate: number;
  done: number;
  errors: number;
  perS: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  serverCpuPct: number;
  serverCpuMsPerHb: number;
  pgCpuMsPerHb: number | null;
  clientCpuPct: number;
  otherCpuPct: number | null;
  machinePct: number | null;
  rssMiB: number;
  late: number;
};

async function measure(
  client: RawHttpClient,
  agents: Agent[],
  rate: number,
  seconds: number,
  offset: number,
  serverPids: number[],
  postmasterPid: number | null,
): Promise<Step> {
  const meter = cpuMeter(postmasterPid);
  const server0 = serverCpuMs(serverPids);
  let rss = serverRssMiB(serverPids);
  const rssTimer = setInterval(() => {
    rss = Math.max(rss, serverRssMiB(serverPids));
  }, 500);
  const { samples, wallMs, late } = await drive(client, agents, rate, seconds, offset);
  clearInterval(rssTimer);
  const serverMs = serverCpuMs(serverPids) - server0;
  const cpu = meter();
  const lat = samples.map((s) => s.ms).sort((a, b) => a - b);
  const ok = samples.filter((s) => s.ok).length;
  const other =
    cpu.machineBusyMs !== null && cpu.postgresMs !== null
      ? Math.max(0, cpu.machineBusyMs - cpu.nodeMs - cpu.postgresMs - serverMs)
      : null;
  return {
    rate,
    done: samples.length,
    errors: samples.length - ok,
    perS: ok / (wallMs / 1000),
    p50: percentile(lat, 50),
    p95: percentile(lat, 95),
    p99: percentile(lat, 99),
    max: lat.at(-1) ?? Number.NaN,
    serverCpuPct: (100 * serverMs) / wallMs,
    serverCpuMsPerHb: serverMs / Math.max(1, samples.length),
    pgCpuMsPerHb: cpu.postgresMs !== null ? cpu.postgresMs / Math.max(1, samples.length) : null,
    clientCpuPct: (100 * cpu.nodeMs) / wallMs,
    otherCpuPct: other !== null ? (100 * other) / wallMs : null,
    machinePct:
      cpu.machineBusyMs !== null ? (100 * cpu.machineBusyMs) / (wallMs * cpu.cores) : null,
    rssMiB: rss,
    late,
  };
}

const stepRow = (name: string, s: Step) => [
  name,
  f0(s.rate),
  f0(s.perS),
  String(s.errors),
  f1(s.p50),
  f1(s.p95),
  f1(s.p99),
  f1(s.max),
  f0(s.serverCpuPct),
  s.serverCpuMsPerHb.toFixed(2),
  s.pgCpuMsPerHb === null ? "?" : s.pgCpuMsPerHb.toFixed(2),
  f0(s.clientCpuPct),
  s.otherCpuPct === null ? "?" : f0(s.otherCpuPct),
  f0(s.rssMiB),
];
const STEP_HEADER = [
  "",
  "target/s",
  "hb/s",
  "errors",
  "p50 ms",
  "p95 ms",
  "p99 ms",
  "max ms",
  "server %cpu",
  "server ms/hb",
  "pg ms/hb",
  "agents %cpu",
  "other %cpu",
  "server RSS MiB",
];

// ---------------------------------------------------------------------------------------------
// Setup: VMs, tokens, registration

async function pool<T>(items: T[], n: number, fn: (item: T, i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i] as T, i);
      }
    }),
  );
}

/** The server processes' token-lookup counters, summed (each worker answers once). */
async function lookupStats(server: ChildProcess): Promise<{ lookups: number; statements: number }> {
  const total = { lookups: 0, statements: 0 };
  const onMessage = (m: { type?: string; lookups?: number; statements?: number }) => {
    if (m.type !== "stats") return;
    total.lookups += m.lookups ?? 0;
    total.statements += m.statements ?? 0;
  };
  server.on("message", onMessage);
  server.send({ type: "stats" });
  await new Promise((r) => setTimeout(r, 300));
  server.off("message", onMessage);
  return total;
}

async function withBenchDb<T>(url: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function seedAgents(benchUrl: string, n: number): Promise<Agent[]> {
  const { db, sql } = createDatabase(benchUrl, { max: 8 });
  try {
    const [fleet] = await sql<{ id: string }[]>`
      INSERT INTO fleets (name, driver, instance_type, gpu_model, gpu_count, status, desired_size)
      VALUES ('bench-heartbeat', 'local', 'g5.xlarge', 'NVIDIA A10G', 1, 'active', ${n})
      RETURNING id`;
    if (!fleet) throw new Error("fleet insert returned nothing");
    const rows = await sql<{ id: string }[]>`
      INSERT INTO vms (fleet_id, name, state)
      SELECT ${fleet.id}, 'hb-vm-' || i, 'provisioning' FROM generate_series(1, ${n}::int) AS i
      ORDER BY i RETURNING id`;
    const agents: Agent[] = rows.map((r) => ({ vmId: r.id, token: "", bootId: `boot-${r.id}` }));
    // One real token per VM, through the same function the provisioning path uses.
    await pool(agents, 8, async (a) => {
      a.token = await issueAgentToken(db, a.vmId);
    });
    return agents;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function registerAll(client: RawHttpClient, agents: Agent[]) {
  let failed = 0;
  await pool(agents, 32, async (a) => {
    const input = {
      vmId: a.vmId,
      bootId: a.bootId,
      hostname: `host-${a.vmId.slice(0, 8)}`,
      agentVersion: "bench",
      protocolVersion: 2,
      gpus: [gpuReading(a.vmId)],
      health: { healthy: true, reasons: [] },
    };
    const { status } = await client.post(
      "/api/trpc/agent.register",
      `Bearer ${a.token}`,
      JSON.stringify(superjson.serialize(input)),
    );
    if (status !== 200) failed++;
  });
  return failed;
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<number> {
  const opts = readOptions();
  let server: ChildProcess | null = null;
  const stopServer = async () => {
    if (server && server.exitCode === null) {
      const exited = new Promise((r) => server?.once("exit", r));
      server.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 4000))]);
    }
  };
  const scratch = { dataDir: EMBEDDED_DIR, port: opts.pgPort, alsoDrop: [PGBENCH_DB] };
  return withScratchPostgres({ ...scratch, beforeCleanup: stopServer }, async (pg) => {
    const { admin, adminUrl, postmasterPid, where } = pg;
    const [info] = await admin<{ version: string; fsync: string; sc: string }[]>`
      SELECT current_setting('server_version') AS version, current_setting('fsync') AS fsync,
             current_setting('synchronous_commit') AS sc`;
    const benchUrl = await pg.freshDatabase(BENCH_DB, { migrate: true });

    console.log("LabLink heartbeat benchmark");
    console.log(
      `  database : ${where}, PostgreSQL ${info?.version}, fsync=${info?.fsync} synchronous_commit=${info?.sc}`,
    );
    console.log(
      `  machine  : ${cpus().length} CPUs, Node ${process.version}, load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")}`,
    );
    console.log(
      `  server   : bench/heartbeat-server.ts (${process.env.BENCH_VIA === "fetch" ? "tRPC fetch handler, BENCH_VIA=fetch" : "agent gateway"} + agent auth), ${opts.workers} process(es), pool ${opts.pool} each, ` +
        `LABLINK_HEARTBEAT_FLUSH_MS=${process.env.LABLINK_HEARTBEAT_FLUSH_MS ?? "(default)"} ` +
        `LABLINK_GPU_SAMPLE_INTERVAL_S=${process.env.LABLINK_GPU_SAMPLE_INTERVAL_S ?? "(default)"}`,
    );

    let t = performance.now();
    const agents = await seedAgents(benchUrl, opts.vms);
    console.log(
      `  seed     : ${opts.vms} VMs with their own agent tokens, ${f0(performance.now() - t)} ms`,
    );
    const started = await startServer(benchUrl, opts);
    server = started.child;
    const serverPids = started.pids;
    const client = new RawHttpClient(started.port, opts.connections);
    t = performance.now();
    const failedRegs = await registerAll(client, agents);
    console.log(
      `  register : ${opts.vms} agent.register calls over HTTP, ${failedRegs} failed, ${f0(performance.now() - t)} ms`,
    );
    if (failedRegs > 0) return 2;

    // Warm-up, untimed: opens the sockets and the pool's connections, lets V8 optimise.
    await drive(client, agents, Math.min(1000, opts.vms / opts.intervalS), 5, 0);

    const rate = opts.vms / opts.intervalS;
    console.log(
      `\nsteady: ${opts.vms} agents every ${opts.intervalS} s = ${f0(rate)} heartbeats/s for ${opts.durationS} s, ` +
        `${opts.connections} keep-alive connections`,
    );
    // BENCH_SERVER_PROFILE=dir: a V8 CPU profile of the server during the steady run only.
    server.send({ type: "profile-start" });
    const vmUpdates = () =>
      withBenchDb(benchUrl, async (sql) => {
        const [row] = await sql<{ upd: number; hot: number }[]>`
          SELECT n_tup_upd::int AS upd, n_tup_hot_upd::int AS hot
          FROM pg_stat_user_tables WHERE relname = 'vms'`;
        return row ?? { upd: 0, hot: 0 };
      });
    const updates0 = await vmUpdates();
    const lookups0 = await lookupStats(server);
    const mark = await admin.unsafe(`SELECT now() AS t`);
    const steady = await measure(
      client,
      agents,
      rate,
      opts.durationS,
      0,
      serverPids,
      postmasterPid,
    );
    console.log(table(STEP_HEADER, [stepRow("steady", steady)]));
    server.send({ type: "profile-stop" });

    // Every VM's heartbeat must be in the database (after at most one flush interval).
    await new Promise((r) => setTimeout(r, 1500));
    const sqlBench = postgres(benchUrl, { max: 1, onnotice: () => {} });
    const expected = Math.min(opts.vms, Math.round(rate * opts.durationS));
    const [seen] = await sqlBench<{ n: number }[]>`
      SELECT count(*)::int AS n FROM vms WHERE last_heartbeat_at >= ${mark[0]?.t as Date}`;
    const [samples] = await sqlBench<{ n: number }[]>`SELECT count(*)::int AS n FROM gpu_samples`;
    await sqlBench.end({ timeout: 5 });
    const stored = seen?.n ?? 0;
    console.log(
      `  database: ${stored} of ${expected} VMs show a heartbeat from this run; ${samples?.n ?? 0} gpu_samples rows`,
    );
    const lookups1 = await lookupStats(server);
    const lookups = lookups1.lookups - lookups0.lookups;
    const statements = lookups1.statements - lookups0.statements;
    console.log(
      `  token lookups: ${lookups} in ${statements} statements (${statements ? f1(lookups / statements) : "–"} per statement)`,
    );
    // Heap-only (HOT) updates touch no index: what keeps the buffered flush cheap.
    const updates1 = await vmUpdates();
    const upd = updates1.upd - updates0.upd;
    const hot = updates1.hot - updates0.hot;
    console.log(
      `  vms row updates during the steady run: ${upd}, of which HOT (no index touched): ${hot} (${upd ? f0((100 * hot) / upd) : "–"} %)`,
    );
    const correct = steady.errors === 0 && stored >= expected;

    let maxRate: Step | null = null;
    if (opts.ramp) {
      console.log(
        `\nramp: from ${opts.rampStart}/s, +${opts.rampStep}/s every ${opts.stepS} s, until p95 > ${TARGET_P95_MS} ms, an error, or < 90% of the target rate`,
      );
      const steps: Step[] = [];
      let offset = 0;
      for (let r = opts.rampStart; r <= opts.rampMax; r += opts.rampStep) {
        const s = await measure(client, agents, r, opts.stepS, offset, serverPids, postmasterPid);
        offset += Math.round(r * opts.stepS);
        steps.push(s);
        console.log(table(STEP_HEADER, [stepRow(`ramp ${steps.length}`, s)]).split("\n")[2]);
        const pass = s.p95 < TARGET_P95_MS && s.errors === 0 && s.perS >= 0.9 * r;
        if (!pass) break;
        maxRate = s;
      }
      console.log(
        `\n${table(
          STEP_HEADER,
          steps.map((s, i) => stepRow(`ramp ${i + 1}`, s)),
        )}`,
      );
      console.log(
        maxRate
          ? `maximum: ${f0(maxRate.perS)} heartbeats/s with p95 ${f1(maxRate.p95)} ms (target ${f0(maxRate.rate)}/s)`
          : "maximum: even the first step failed",
      );
    }
    client.close();

    let tps: number | null = null;
    if (opts.pgbench) {
      const pb = await pgbench(
        adminUrl,
        admin,
        { clients: opts.pool, seconds: opts.pgbenchSeconds, database: PGBENCH_DB },
        postmasterPid,
      );
      if ("error" in pb) console.log(pb.error);
      else {
        tps = pb.tps;
        console.log(
          `pgbench: tps = ${f1(pb.tps)} (without initial connection time), ${pb.txns} transactions, ${pb.clients} clients, latency average ${pb.latencyMs ?? "?"} ms`,
        );
        if (pb.cpu) console.log(`  ${pb.cpu}`);
        if (pb.pgMsPerTxn !== null && steady.pgCpuMsPerHb !== null) {
          console.log(
            `postgres CPU per heartbeat ${steady.pgCpuMsPerHb.toFixed(3)} ms (steady) vs per pgbench transaction ${pb.pgMsPerTxn.toFixed(3)} ms`,
          );
        }
        console.log(
          `ratio heartbeats/s / pgbench tps: steady ${f0(steady.perS)} / ${f1(pb.tps)} = ${(steady.perS / pb.tps).toFixed(2)}` +
            (maxRate
              ? `, ramp maximum ${f0(maxRate.perS)} / ${f1(pb.tps)} = ${(maxRate.perS / pb.tps).toFixed(2)}`
              : ""),
        );
      }
    }
    const best = maxRate ?? steady;
    console.log("\nverdict:");
    console.log(
      `  correctness            : ${correct ? "PASS" : "FAIL"}  ${steady.errors} errors, ${stored}/${expected} VMs stored`,
    );
    console.log(
      `  >= ${TARGET_RATE} hb/s, p95 < ${TARGET_P95_MS} ms: ${
        maxRate
          ? `${best.perS >= TARGET_RATE && best.p95 < TARGET_P95_MS ? "PASS" : "FAIL"}  ${f0(best.perS)} hb/s at p95 ${f1(best.p95)} ms`
          : opts.ramp
            ? `FAIL  not even the first step (${opts.rampStart}/s) met it`
            : "n/a (run with --ramp)"
      }${tps ? ` (pgbench ${f1(tps)} tps)` : ""}`,
    );
    console.log(
      `  steady p95 < ${TARGET_P95_MS} ms     : ${steady.p95 < TARGET_P95_MS ? "PASS" : "FAIL"}  ${f1(steady.p95)} ms at ${f0(steady.perS)} hb/s`,
    );
    return correct ? 0 : 1;
  });
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e);
    process.exit(2);
  },
);
