/**
 * Claim-burst benchmark: N researchers race at once for M ready VMs through the real `claimVm`
 * (server/domain/allocation.ts, the function the API calls), on real Postgres, and the result is
 * checked from the database. A pgbench simple-update run on the same server gives a baseline.
 *
 *   npm run bench:claim -- [--runs 3] [--pool 40] [--users 1000] [--vms 500] [--pgbench-seconds 10]
 *                          [--no-pgbench] [--gate] [--prepared]
 *
 * DATABASE_URL set: scratch databases `lablink_bench` and `lablink_pgbench` are created on that
 * server (the role needs CREATEDB) and dropped at the end. Otherwise an embedded Postgres is
 * started with its data in .data/bench on port 54349 and stopped at the end.
 *
 * Exit code: 0 when every run is correct (PASS/FAIL on the performance targets is printed but does
 * not change it), 1 when a run is not (winners != min(users, vms), any duplicate, any loser that
 * did not get NO_CAPACITY), 2 on a setup error. See bench/README.md.
 */
import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { drizzle } from "drizzle-orm/postgres-js";
import type postgres from "postgres";
import { createDatabase, type Database } from "../server/db/client";
import * as schema from "../server/db/schema";
import { claimVm } from "../server/domain/allocation";
import { isDomainError } from "../server/domain/errors";
import {
  cpuMeter,
  describeCpu,
  f0,
  f1,
  median,
  percentile,
  pgbench,
  positiveInt,
  table,
  withScratchPostgres,
} from "./lib";

const BENCH_DB = "lablink_bench";
const PGBENCH_DB = "lablink_pgbench";
const EMBEDDED_DIR = ".data/bench";
const EMBEDDED_PORT = 54349;
const TARGET_RATIO = 0.3;
const TARGET_P95_MS = 100;

// ---------------------------------------------------------------------------------------------
// Options

function readOptions() {
  const { values } = parseArgs({
    options: {
      runs: { type: "string" },
      pool: { type: "string" },
      users: { type: "string" },
      vms: { type: "string" },
      "pgbench-seconds": { type: "string" },
      "no-pgbench": { type: "boolean", default: false },
      gate: { type: "boolean", default: false },
      prepared: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(
      "usage: npm run bench:claim -- [--runs 3] [--pool 40] [--users 1000] [--vms 500] [--pgbench-seconds 10] [--no-pgbench] [--gate] [--prepared]",
    );
    process.exit(0);
  }
  return {
    runs: positiveInt("runs", values.runs, 3),
    pool: positiveInt("pool", values.pool, 40),
    users: positiveInt("users", values.users, 1000),
    vms: positiveInt("vms", values.vms, 500),
    pgbenchSeconds: positiveInt("pgbench-seconds", values["pgbench-seconds"], 10),
    pgbench: !values["no-pgbench"],
    /** Let at most `pool` claims run at once (the rest wait their turn) instead of all 1,000. */
    gate: values.gate ?? false,
    /** Experiment: Drizzle queries as named prepared statements (see withPreparedStatements). */
    prepared: values.prepared ?? false,
  };
}

type Options = ReturnType<typeof readOptions>;

// ---------------------------------------------------------------------------------------------
// Small helpers

/**
 * Experiment (--prepared), not how the app runs: Drizzle's postgres-js driver sends every query that
 * was not built with `.prepare(name)` as an unnamed statement, so postgres.js first sends
 * Parse/Describe, waits for the answer, then Bind/Execute (two round trips) and Postgres plans it
 * again each time. This wraps the same pool so that those queries become named prepared statements,
 * cached per connection, to measure what that would change. `claimVm` itself is untouched.
 */
function withPreparedStatements(database: Database): Database {
  const client = new Proxy(database.sql, {
    get(target, key) {
      if (key === "unsafe") {
        return (query: string, params?: postgres.ParameterOrJSON<never>[], options?: object) =>
          target.unsafe(query, params, { ...options, prepare: true });
      }
      return Reflect.get(target, key);
    },
  });
  return { sql: database.sql, db: drizzle(client, { schema }) };
}

// ---------------------------------------------------------------------------------------------
// Seeding (bulk SQL straight into the schema of server/db/schema)

type Seed = { fleetId: string; userIds: string[] };

async function insertUsers(sql: postgres.Sql, prefix: string, n: number): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    INSERT INTO users (name, email, role)
    SELECT ${prefix} || '-' || i, ${prefix} || '-' || i || '@example.edu', 'researcher'
    FROM generate_series(1, ${n}::int) AS i
    ORDER BY i
    RETURNING id`;
  return rows.map((r) => r.id);
}

async function insertFleet(sql: postgres.Sql, name: string): Promise<string> {
  const [row] = await sql<{ id: string }[]>`
    INSERT INTO fleets (name, driver, instance_type, gpu_model, gpu_count, status, desired_size)
    VALUES (${name}, 'local', 'g5.xlarge', 'NVIDIA A10G', 1, 'active', 0)
    RETURNING id`;
  if (!row) throw new Error("fleet insert returned nothing");
  return row.id;
}

/** VM i became ready i seconds ago, as in a real pool where VMs come up one after another. */
async function insertVms(
  sql: postgres.Sql,
  fleetId: string,
  prefix: string,
  n: number,
): Promise<void> {
  await sql`
    INSERT INTO vms (fleet_id, name, state, healthy, boot_id, state_changed_at)
    SELECT ${fleetId}, ${prefix} || '-vm-' || i, 'ready', true, 'boot-1', now() - i * interval '1 second'
    FROM generate_series(1, ${n}::int) AS i`;
}

/** Puts every VM of the fleet back in `ready`, healthy, without a holder, in the seeded order. */
async function resetFleet(sql: postgres.Sql, fleetId: string): Promise<void> {
  await sql`
    UPDATE vms SET
      state = 'ready', healthy = true, holder_id = NULL, assignment_id = NULL,
      assignment_acked_id = NULL, claimed_at = NULL, released_at = NULL,
      state_changed_at = now() - split_part(name, '-vm-', 2)::int * interval '1 second'
    WHERE fleet_id = ${fleetId}`;
}

async function seed(sql: postgres.Sql, opts: Options): Promise<Seed> {
  const userIds = await insertUsers(sql, "bench-researcher", opts.users);
  const fleetId = await insertFleet(sql, "bench-fleet");
  await insertVms(sql, fleetId, "bench", opts.vms);
  return { fleetId, userIds };
}

/** Same starting point for every run: all VMs ready, no audit rows, fresh statistics. */
async function prepareRun(sql: postgres.Sql, seedData: Seed): Promise<void> {
  await resetFleet(sql, seedData.fleetId);
  await sql`TRUNCATE audit_events`;
  await sql.unsafe("VACUUM ANALYZE vms");
  await sql.unsafe("VACUUM ANALYZE audit_events");
}

// ---------------------------------------------------------------------------------------------
// The burst

/** `ms`: from the call to the answer, as the caller sees it. `serviceMs`: only while in a slot (--gate). */
type Attempt = { userId: string; ms: number; serviceMs: number } & (
  | { ok: true; vmId: string; rejoined: boolean }
  | { ok: false; code: string; message: string }
);

/** A FIFO semaphore: at most `n` holders at once. */
function semaphore(n: number) {
  let free = n;
  const waiting: (() => void)[] = [];
  return {
    acquire: (): Promise<void> => {
      if (free > 0) {
        free--;
        return Promise.resolve();
      }
      return new Promise((resolve) => waiting.push(resolve));
    },
    release: () => {
      const next = waiting.shift();
      if (next) next();
      else free++;
    },
  };
}

/**
 * Every researcher calls claimVm at the same moment. Ungated (default) they all go through the
 * postgres.js pool at once, as concurrent API requests would; gated, only `gate` claims run at a
 * time and the others queue in front of claimVm.
 */
async function burst(database: Database, fleetId: string, userIds: string[], gate: number | null) {
  const slots = gate ? semaphore(gate) : null;
  const t0 = performance.now();
  const attempts = await Promise.all(
    userIds.map(async (userId): Promise<Attempt> => {
      const start = performance.now();
      await slots?.acquire();
      const inSlot = performance.now();
      try {
        const { vm, rejoined } = await claimVm(database.db, {
          userId,
          fleetId,
          actor: { kind: "user", id: userId, ip: "127.0.0.1" },
        });
        const end = performance.now();
        return {
          userId,
          ms: end - start,
          serviceMs: end - inSlot,
          ok: true,
          vmId: vm.id,
          rejoined,
        };
      } catch (e) {
        const end = performance.now();
        const code = isDomainError(e) ? e.code : ((e as { code?: string }).code ?? "ERROR");
        const message = e instanceof Error ? e.message : String(e);
        return { userId, ms: end - start, serviceMs: end - inSlot, ok: false, code, message };
      } finally {
        slots?.release();
      }
    }),
  );
  return { attempts, wallMs: performance.now() - t0 };
}

// ---------------------------------------------------------------------------------------------
// Verification from the database

type RunResult = {
  run: number;
  attempts: number;
  winners: number;
  appWinners: number;
  losers: number;
  noCapacity: number;
  otherErrors: number;
  firstOtherError: string | null;
  rejoined: number;
  duplicates: number;
  dupDetail: {
    vmClaimedTwice: number;
    researcherHoldsTwo: number;
    vmReturnedTwice: number;
    mismatched: number;
  };
  wallMs: number;
  attemptsPerS: number;
  winsPerS: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  /** Service time (in a slot, --gate only). */
  svcP50: number;
  svcP95: number;
  correct: boolean;
};

async function verify(
  sql: postgres.Sql,
  fleetId: string,
  run: number,
  expectedWinners: number,
  attempts: Attempt[],
  wallMs: number,
): Promise<RunResult> {
  const [dbCount] = await sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM vms
    WHERE fleet_id = ${fleetId} AND state = 'claimed' AND holder_id IS NOT NULL`;
  const [vmTwice] = await sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM (
      SELECT target_id FROM audit_events WHERE action = 'vm.claim'
      GROUP BY target_id HAVING count(*) > 1) t`;
  const [holdsTwo] = await sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM (
      SELECT holder_id FROM vms WHERE holder_id IS NOT NULL
      GROUP BY holder_id HAVING count(*) > 1) t`;
  const held = await sql<{ id: string; holderId: string }[]>`
    SELECT id, holder_id AS "holderId" FROM vms WHERE fleet_id = ${fleetId} AND holder_id IS NOT NULL`;

  const holderOf = new Map(held.map((r) => [r.id, r.holderId]));
  const wins = attempts.filter((a) => a.ok);
  const seen = new Map<string, number>();
  for (const w of wins) seen.set(w.vmId, (seen.get(w.vmId) ?? 0) + 1);
  const vmReturnedTwice = [...seen.values()].filter((n) => n > 1).length;
  // Every winner must be the holder the database has for the VM it was handed.
  const mismatched = wins.filter((w) => holderOf.get(w.vmId) !== w.userId).length;
  const losers = attempts.filter((a) => !a.ok);
  const others = losers.filter((a) => a.code !== "NO_CAPACITY");
  const dupDetail = {
    vmClaimedTwice: vmTwice?.n ?? 0,
    researcherHoldsTwo: holdsTwo?.n ?? 0,
    vmReturnedTwice,
    mismatched,
  };
  const duplicates =
    dupDetail.vmClaimedTwice + dupDetail.researcherHoldsTwo + dupDetail.vmReturnedTwice;
  const winners = dbCount?.n ?? 0;
  const lat = attempts.map((a) => a.ms).sort((a, b) => a - b);
  const svc = attempts.map((a) => a.serviceMs).sort((a, b) => a - b);
  const wallS = wallMs / 1000;
  const rejoined = wins.filter((w) => w.rejoined).length;
  const first = others[0];
  return {
    run,
    attempts: attempts.length,
    winners,
    appWinners: wins.length,
    losers: losers.length,
    noCapacity: losers.length - others.length,
    otherErrors: others.length,
    firstOtherError: first && !first.ok ? `${first.code}: ${first.message}` : null,
    rejoined,
    duplicates,
    dupDetail,
    wallMs,
    attemptsPerS: attempts.length / wallS,
    winsPerS: winners / wallS,
    p50: percentile(lat, 50),
    p95: percentile(lat, 95),
    p99: percentile(lat, 99),
    max: lat[lat.length - 1] ?? Number.NaN,
    svcP50: percentile(svc, 50),
    svcP95: percentile(svc, 95),
    correct:
      winners === expectedWinners &&
      wins.length === expectedWinners &&
      duplicates === 0 &&
      mismatched === 0 &&
      others.length === 0 &&
      rejoined === 0,
  };
}

// ---------------------------------------------------------------------------------------------
async function main(): Promise<number> {
  const opts = readOptions();
  const expectedWinners = Math.min(opts.users, opts.vms);

  let database: Database | null = null;
  const closePool = async () => {
    await database?.sql.end({ timeout: 5 });
  };
  const scratch = { dataDir: EMBEDDED_DIR, port: EMBEDDED_PORT, alsoDrop: [PGBENCH_DB] };
  return withScratchPostgres({ ...scratch, beforeCleanup: closePool }, async (pg) => {
    const { admin, adminUrl, postmasterPid, where } = pg;
    const [info] = await admin<
      { version: string; fsync: string; sc: string; sb: string; mc: string }[]
    >`
      SELECT current_setting('server_version') AS version, current_setting('fsync') AS fsync,
             current_setting('synchronous_commit') AS sc, current_setting('shared_buffers') AS sb,
             current_setting('max_connections') AS mc`;
    const benchUrl = await pg.freshDatabase(BENCH_DB, { migrate: true });

    console.log("LabLink claim benchmark");
    console.log(`  database : ${where}, PostgreSQL ${info?.version}`);
    console.log(
      `             fsync=${info?.fsync} synchronous_commit=${info?.sc} shared_buffers=${info?.sb} max_connections=${info?.mc}`,
    );
    const load = loadavg().map((l) => l.toFixed(2));
    console.log(
      `  machine  : ${cpus().length} CPUs, Node ${process.version}, load average ${load.join(" ")}`,
    );
    console.log(
      `  burst    : ${opts.users} researchers, ${opts.vms} ready VMs, postgres.js pool max ${opts.pool}, ` +
        `${opts.runs} run(s)${opts.gate ? `, gated: at most ${opts.pool} claims in flight` : ""}` +
        `${opts.prepared ? ", EXPERIMENT --prepared: Drizzle queries as named prepared statements" : ""}`,
    );

    database = createDatabase(benchUrl, { max: opts.pool });
    const seedData = await seed(database.sql, opts);
    const claimDb = opts.prepared ? withPreparedStatements(database) : database;

    // Warm-up: one whole untimed burst. It opens every pool connection, fills each backend's
    // caches and lets V8 optimise Drizzle's and postgres.js's hot paths.
    await prepareRun(database.sql, seedData);
    const warm = await burst(
      claimDb,
      seedData.fleetId,
      seedData.userIds,
      opts.gate ? opts.pool : null,
    );
    const warmOk = warm.attempts.filter((a) => a.ok).length;
    console.log(
      `  warm-up  : one untimed burst, ${warmOk} of ${warm.attempts.length} claims won, ${f0(warm.wallMs)} ms`,
    );

    const results: RunResult[] = [];
    const pgMsPerAttempt: number[] = [];
    for (let run = 1; run <= opts.runs; run++) {
      await prepareRun(database.sql, seedData);
      const meter = cpuMeter(postmasterPid);
      const gate = opts.gate ? opts.pool : null;
      const { attempts, wallMs } = await burst(claimDb, seedData.fleetId, seedData.userIds, gate);
      const cpu = meter();
      const r = await verify(
        database.sql,
        seedData.fleetId,
        run,
        expectedWinners,
        attempts,
        wallMs,
      );
      results.push(r);
      if (cpu.postgresMs !== null) pgMsPerAttempt.push(cpu.postgresMs / r.attempts);
      console.log(
        `\nrun ${run}: winners ${r.winners} (expected ${expectedWinners}), losers ${r.losers} ` +
          `(${r.noCapacity} NO_CAPACITY, ${r.otherErrors} other), duplicates ${r.duplicates}, ` +
          `wall ${f0(r.wallMs)} ms${r.correct ? "" : "  <-- INCORRECT"}`,
      );
      console.log(`  ${describeCpu(cpu, r.wallMs, r.attempts)}`);
      if (opts.gate)
        console.log(`  service time (in a slot): p50 ${f1(r.svcP50)} ms, p95 ${f1(r.svcP95)} ms`);
      if (!r.correct) {
        console.log(
          `  detail: ${JSON.stringify({ ...r.dupDetail, appWinners: r.appWinners, rejoined: r.rejoined })}`,
        );
        if (r.firstOtherError) console.log(`  first other error: ${r.firstOtherError}`);
      }
    }

    const med = {
      wallMs: median(results.map((r) => r.wallMs)),
      attemptsPerS: median(results.map((r) => r.attemptsPerS)),
      winsPerS: median(results.map((r) => r.winsPerS)),
      p50: median(results.map((r) => r.p50)),
      p95: median(results.map((r) => r.p95)),
      p99: median(results.map((r) => r.p99)),
      max: median(results.map((r) => r.max)),
    };
    const row = (name: string, r: Omit<RunResult, "run"> | null, m = med) => [
      name,
      r ? String(r.winners) : "",
      r ? String(r.losers) : "",
      r ? String(r.duplicates) : "",
      f0(m.wallMs),
      f0(m.attemptsPerS),
      f0(m.winsPerS),
      f1(m.p50),
      f1(m.p95),
      f1(m.p99),
      f1(m.max),
    ];
    console.log(
      `\n${table(
        [
          "run",
          "winners",
          "losers",
          "dups",
          "wall ms",
          "claims/s",
          "wins/s",
          "p50 ms",
          "p95 ms",
          "p99 ms",
          "max ms",
        ],
        [...results.map((r) => row(`run ${r.run}`, r, r)), row("median", null)],
      )}`,
    );
    console.log(
      "(claims/s = attempts incl. NO_CAPACITY per wall second; wins/s = successful claims per wall second;\n" +
        " latency = one claimVm call from the caller's side, pool wait included)",
    );

    await database.sql.end({ timeout: 5 });
    database = null;

    let ratio: number | null = null;
    if (opts.pgbench) {
      const pb = await pgbench(
        adminUrl,
        admin,
        { clients: opts.pool, seconds: opts.pgbenchSeconds, database: PGBENCH_DB },
        postmasterPid,
      );
      if ("error" in pb) {
        console.log(pb.error);
      } else {
        ratio = med.attemptsPerS / pb.tps;
        console.log(
          `pgbench: tps = ${f1(pb.tps)} (without initial connection time), ${pb.txns} transactions, ${pb.clients} clients, ` +
            `latency average ${pb.latencyMs ?? "?"} ms`,
        );
        if (pb.cpu) console.log(`  ${pb.cpu}`);
        if (pb.pgMsPerTxn !== null && pgMsPerAttempt.length) {
          const perAttempt = median(pgMsPerAttempt);
          console.log(
            `postgres CPU per claim attempt ${perAttempt.toFixed(2)} ms (median) vs per pgbench transaction ` +
              `${pb.pgMsPerTxn.toFixed(2)} ms = ${(perAttempt / pb.pgMsPerTxn).toFixed(1)}x (much less sensitive to other load than the rates)`,
          );
        }
        console.log(
          `ratio claims/s / pgbench tps = ${f0(med.attemptsPerS)} / ${f1(pb.tps)} = ${ratio.toFixed(2)}` +
            `   (successful claims: ${f0(med.winsPerS)} / ${f1(pb.tps)} = ${(med.winsPerS / pb.tps).toFixed(2)})`,
        );
      }
    }

    const correct = results.every((r) => r.correct);
    console.log("\nverdict (medians):");
    console.log(
      `  correctness   : ${correct ? "PASS" : "FAIL"}  winners ${results.map((r) => r.winners).join("/")} of ${expectedWinners}, ` +
        `duplicates ${results.map((r) => r.duplicates).join("/")}, losers not NO_CAPACITY ${results.map((r) => r.otherErrors).join("/")}`,
    );
    console.log(
      `  ratio >= ${TARGET_RATIO}  : ${ratio === null ? "n/a (no pgbench baseline)" : `${ratio >= TARGET_RATIO ? "PASS" : "FAIL"}  ${ratio.toFixed(2)}`}`,
    );
    console.log(
      `  p95 < ${TARGET_P95_MS} ms  : ${med.p95 < TARGET_P95_MS ? "PASS" : "FAIL"}  ${f1(med.p95)} ms`,
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
