/**
 * Helpers shared by the benchmarks in bench/: percentiles and tables, CPU accounting from /proc,
 * and the pgbench baseline run on the same server. See bench/README.md.
 */
import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { cpus } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type postgres from "postgres";

export function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`--${name} must be a positive integer, got "${value}"`);
  return n;
}

export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] as number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export const f1 = (n: number) => n.toFixed(1);
export const f0 = (n: number) => n.toFixed(0);

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join("  ");
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

// ---------------------------------------------------------------------------------------------
// CPU accounting (Linux /proc): who used the cores during a run. On a shared machine the
// "other" share shows how much the figures were disturbed by processes outside the benchmark.

export const CLK_TCK_MS = 10; // USER_HZ is 100 on Linux

export function machineTicks(): { busy: number; total: number } | null {
  try {
    const cpu = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "")
      .split(/\s+/)
      .slice(1)
      .map(Number);
    const total = cpu.reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
    return { busy: total - (cpu[3] ?? 0) - (cpu[4] ?? 0), total };
  } catch {
    return null;
  }
}

/** CPU ms used so far by a postmaster and its backends, live or exited, or null if unknown. */
export function postgresCpuMs(postmasterPid: number | null): number | null {
  if (!postmasterPid) return null;
  let ticks = 0;
  try {
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      let stat: string;
      try {
        stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      } catch {
        continue; // exited meanwhile
      }
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(entry) === postmasterPid) {
        // Its own CPU plus that of the backends that have exited (cutime, cstime).
        ticks += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
      } else if (Number(fields[1]) === postmasterPid) {
        ticks += Number(fields[11]) + Number(fields[12]);
      }
    }
  } catch {
    return null;
  }
  return ticks * CLK_TCK_MS;
}

/** The postmaster of an embedded server whose data lives in `dataDir`. */
export function embeddedPostmasterPid(dataDir: string): number | null {
  try {
    const pid = Number(
      readFileSync(path.resolve(dataDir, "postgres", "postmaster.pid"), "utf8").split("\n")[0],
    );
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

export type CpuUse = {
  nodeMs: number;
  postgresMs: number | null;
  machineBusyMs: number | null;
  cores: number;
};

export function cpuMeter(postmasterPid: number | null) {
  const node0 = process.cpuUsage();
  const pg0 = postgresCpuMs(postmasterPid);
  const m0 = machineTicks();
  return (): CpuUse => {
    const node = process.cpuUsage(node0);
    const pg1 = postgresCpuMs(postmasterPid);
    const m1 = machineTicks();
    return {
      nodeMs: (node.user + node.system) / 1000,
      postgresMs: pg0 !== null && pg1 !== null ? pg1 - pg0 : null,
      machineBusyMs: m0 && m1 ? (m1.busy - m0.busy) * CLK_TCK_MS : null,
      cores: cpus().length,
    };
  };
}

export function describeCpu(c: CpuUse, wallMs: number, attempts: number): string {
  const parts = [`bench process ${f0(c.nodeMs)} ms`];
  if (c.postgresMs !== null) parts.push(`postgres ${f0(c.postgresMs)} ms`);
  if (c.machineBusyMs !== null) {
    const other = c.machineBusyMs - c.nodeMs - (c.postgresMs ?? 0);
    if (c.postgresMs !== null) parts.push(`other processes ${f0(Math.max(0, other))} ms`);
    parts.push(`machine ${f0((100 * c.machineBusyMs) / (wallMs * c.cores))}% busy`);
  }
  const perAttempt =
    c.postgresMs !== null
      ? `; ${((c.nodeMs + c.postgresMs) / attempts).toFixed(2)} CPU-ms per attempt`
      : "";
  return `cpu: ${parts.join(", ")}${perAttempt}`;
}

// pgbench baseline

export type PgbenchResult =
  | {
      tps: number;
      txns: number;
      latencyMs: number | null;
      clients: number;
      cpu: string;
      pgMsPerTxn: number | null;
    }
  | { error: string };

export function describePgbenchCpu(c: CpuUse, wallMs: number): string {
  const parts: string[] = [];
  if (c.postgresMs !== null) parts.push(`postgres ${f0(c.postgresMs)} ms`);
  if (c.machineBusyMs !== null) {
    if (c.postgresMs !== null) {
      parts.push(
        `pgbench client and other processes ${f0(Math.max(0, c.machineBusyMs - c.nodeMs - c.postgresMs))} ms`,
      );
    }
    parts.push(`machine ${f0((100 * c.machineBusyMs) / (wallMs * c.cores))}% busy`);
  }
  return parts.length ? `cpu: ${parts.join(", ")}` : "";
}

export function runTool(file: string, args: string[], env: NodeJS.ProcessEnv) {
  return new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
    execFile(file, args, { env, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(err, { stdout, stderr }));
      else resolve({ stdout, stderr });
    });
  });
}

/** Connection flags from the URL; the password travels in PGPASSWORD, never on the command line. */
export function pgConnection(url: string) {
  const u = new URL(url);
  const host = u.searchParams.get("host") ?? (u.hostname || "127.0.0.1");
  const args = [
    "-h",
    host,
    "-p",
    u.port || "5432",
    "-U",
    decodeURIComponent(u.username || "postgres"),
  ];
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.PGPASSWORD;
  if (u.password) env.PGPASSWORD = decodeURIComponent(u.password);
  const sslmode = u.searchParams.get("sslmode");
  if (sslmode) env.PGSSLMODE = sslmode;
  return { args, env };
}

/** pgbench's clients are capped here: more would only measure the server's connection overhead. */
export const PGBENCH_MAX_CLIENTS = 40;

/**
 * The baseline: `pgbench -i -s 10` into a scratch database `pgbenchDb` on the same server, then
 * `pgbench -N -c <clients, at most 40> -j 2 -T <seconds> -M prepared` (simple-update), with the
 * Postgres CPU it took. The scratch database is dropped afterwards.
 */
export async function pgbench(
  adminUrl: string,
  admin: postgres.Sql,
  opts: { clients: number; seconds: number; database: string },
  postmasterPid: number | null,
): Promise<PgbenchResult> {
  const clients = Math.min(opts.clients, PGBENCH_MAX_CLIENTS);
  const PGBENCH_DB = opts.database;
  const { args, env } = pgConnection(adminUrl);
  try {
    await runTool("pgbench", ["--version"], env);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      return { error: "pgbench not found: apt-get install -y postgresql-client" };
    }
  }
  await admin.unsafe(`DROP DATABASE IF EXISTS ${PGBENCH_DB} WITH (FORCE)`);
  await admin.unsafe(`CREATE DATABASE ${PGBENCH_DB}`);
  try {
    console.log(`\npgbench: initialising scale 10 in ${PGBENCH_DB} ...`);
    await runTool("pgbench", ["-i", "-s", "10", "-q", ...args, PGBENCH_DB], env);
    const runArgs = [
      "-N",
      "-c",
      String(clients),
      "-j",
      "2",
      "-T",
      String(opts.seconds),
      "-M",
      "prepared",
    ];
    console.log(`pgbench ${runArgs.join(" ")} (simple-update, ${opts.seconds} s) ...`);
    const meter = cpuMeter(postmasterPid);
    const t0 = performance.now();
    const { stdout } = await runTool("pgbench", [...runArgs, ...args, PGBENCH_DB], env);
    const cpu = meter();
    const wallMs = performance.now() - t0;
    const tps = stdout.match(/tps = ([\d.]+) \(without initial connection time\)/);
    if (!tps?.[1])
      return {
        error: `could not find "tps = ... (without initial connection time)" in:\n${stdout}`,
      };
    const latency = stdout.match(/latency average = ([\d.]+) ms/);
    const txns = Number(
      stdout.match(/number of transactions actually processed: (\d+)/)?.[1] ?? Number.NaN,
    );
    return {
      tps: Number(tps[1]),
      latencyMs: latency?.[1] ? Number(latency[1]) : null,
      clients,
      txns,
      cpu: describePgbenchCpu(cpu, wallMs),
      pgMsPerTxn: cpu.postgresMs !== null && txns > 0 ? cpu.postgresMs / txns : null,
    };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      return { error: "pgbench not found: apt-get install -y postgresql-client" };
    }
    const err = e as Error & { stderr?: string };
    return { error: `pgbench failed: ${err.stderr?.trim() || err.message}` };
  } finally {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${PGBENCH_DB} WITH (FORCE)`);
  }
}

/** Where a benchmark's databases live: its own embedded Postgres, or the server DATABASE_URL names. */
export type ScratchPostgres = {
  adminUrl: string;
  /** One connection to the server's maintenance database. */
  admin: postgres.Sql;
  /** The embedded server's postmaster (for its CPU), or null on DATABASE_URL. */
  postmasterPid: number | null;
  /** For the report's header. */
  where: string;
  /** Drops and creates `db`, migrated when asked; returns its URL. Dropped again at the end. */
  freshDatabase(db: string, options?: { migrate?: boolean }): Promise<string>;
};

/**
 * Runs a benchmark against scratch databases: starts embedded Postgres in `dataDir` on `port`
 * (or uses DATABASE_URL's server), and on return, error or Ctrl-C runs `beforeCleanup` (stop the
 * processes that use the databases), drops every database it created and stops the server.
 */
export async function withScratchPostgres<T>(
  options: {
    dataDir: string;
    port: number;
    /** Databases made by others (pgbench) to drop at the end too. */
    alsoDrop?: string[];
    beforeCleanup?: () => Promise<void>;
  },
  run: (pg: ScratchPostgres) => Promise<T>,
): Promise<T> {
  const [{ default: postgresJs }, { startEmbeddedPostgres }, { runMigrations }] = await Promise.all(
    [import("postgres"), import("../server/db/embedded"), import("../server/db/migrate")],
  );
  let embedded: Awaited<ReturnType<typeof startEmbeddedPostgres>> | null = null;
  let admin: postgres.Sql | null = null;
  const created: string[] = [...(options.alsoDrop ?? [])];
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    await options.beforeCleanup?.().catch(() => {});
    if (admin) {
      for (const db of created) {
        await admin.unsafe(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => {});
      }
      await admin.end({ timeout: 5 }).catch(() => {});
    }
    await embedded?.stop().catch(() => {});
  };
  const onSignal = (signal: NodeJS.Signals) => {
    console.error(`\n${signal}: cleaning up ...`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    let adminUrl = process.env.DATABASE_URL;
    let postmasterPid: number | null = null;
    let where: string;
    if (adminUrl) {
      const u = new URL(adminUrl);
      where = `DATABASE_URL server ${u.hostname}:${u.port || "5432"}`;
    } else {
      embedded = await startEmbeddedPostgres({
        dataDir: path.resolve(options.dataDir),
        port: options.port,
      });
      adminUrl = embedded.url;
      postmasterPid = embeddedPostmasterPid(options.dataDir);
      where = `embedded Postgres (${options.dataDir}, port ${options.port})`;
    }
    const sql = postgresJs(adminUrl, { max: 1, onnotice: () => {} });
    admin = sql;
    const url = adminUrl;
    return await run({
      adminUrl: url,
      admin: sql,
      postmasterPid,
      where,
      async freshDatabase(db, o = {}) {
        if (!created.includes(db)) created.push(db);
        await sql.unsafe(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
        await sql.unsafe(`CREATE DATABASE ${db}`);
        const dbUrl = withDatabase(url, db);
        if (o.migrate) await runMigrations(dbUrl);
        return dbUrl;
      },
    });
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await cleanup();
  }
}
