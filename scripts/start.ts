/**
 * `npm start`: everything a newcomer needs on one machine.
 *
 *  - Postgres: DATABASE_URL if set, else embedded Postgres with data in .data/ (reused next time)
 *  - migrations, then the local fleet's definition (4 simulated GPU VMs by default)
 *  - the web server (Next.js) and the worker (pg-boss; it runs the local fleet's agent processes)
 *
 * Ctrl-C stops everything. Children hold an IPC channel to this process and exit if it dies, so
 * nothing is orphaned even by kill -9; a Postgres left behind that way is stopped on next start.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, rmSync, statSync, utimesSync } from "node:fs";
import path from "node:path";
import { createDatabase } from "../server/db/client";
import { type EmbeddedHandle, localSecret, startEmbeddedPostgres } from "../server/db/embedded";
import { runMigrations } from "../server/db/migrate";
import { ensureFleet } from "../server/domain/fleets";
import { EnvError, parseEnv } from "../server/env";
import { WEB_NODE_FLAGS } from "../server/runtime-flags";

const root = path.resolve(import.meta.dirname, "..");
const args = new Set(process.argv.slice(2));
const dev = args.has("--dev");
const say = (msg: string) => process.stdout.write(`[lablink] ${msg}\n`);

function newestMtime(p: string): number {
  if (!existsSync(p)) return 0;
  const st = statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const entry of readdirSync(p)) {
    if (entry === "node_modules" || entry.startsWith(".")) continue;
    newest = Math.max(newest, newestMtime(path.join(p, entry)));
  }
  return newest;
}

/** Builds the Next app when there is no build or the sources are newer than it. */
function buildIfNeeded() {
  const buildId = path.join(root, ".next/BUILD_ID");
  const built = existsSync(buildId) ? statSync(buildId).mtimeMs : 0;
  const sources = Math.max(
    ...["app", "server", "public", "next.config.ts", "package-lock.json", "postcss.config.mjs"].map(
      (p) => newestMtime(path.join(root, p)),
    ),
  );
  if (built > sources) return;
  say(
    built
      ? "sources changed since the last build; rebuilding the web app…"
      : "building the web app (first run)…",
  );
  // The build is as new as the sources it read, i.e. as its start: a file saved while it runs
  // must make the next start rebuild, so BUILD_ID gets the start time below.
  const startedS = Date.now() / 1000;
  const r = spawnSync(
    process.execPath,
    [path.join(root, "node_modules/next/dist/bin/next"), "build"],
    {
      cwd: root,
      stdio: "inherit",
      env: { ...process.env, NEXT_TELEMETRY_DISABLED: "1" },
    },
  );
  if (r.status !== 0) throw new Error("next build failed (see above)");
  utimesSync(buildId, startedS, startedS);
}

async function main() {
  const env: Record<string, string | undefined> = { ...process.env, NEXT_TELEMETRY_DISABLED: "1" };
  if (env.DATABASE_URL === "") delete env.DATABASE_URL;
  const dataDir = path.resolve(root, env.LABLINK_DATA_DIR ?? ".data");
  if (args.has("--fresh")) rmSync(dataDir, { recursive: true, force: true });
  env.LABLINK_DATA_DIR = dataDir;

  let pg: EmbeddedHandle | null = null;
  const embedded = !env.DATABASE_URL;
  if (embedded) {
    // Embedded mode is a single-machine setup: development sign-in on (loopback only), a
    // persistent random AUTH_SECRET, and a local fleet.
    env.LABLINK_DEV_LOGIN ??= "true";
    env.LABLINK_LOCAL_FLEET_SIZE ??= "4";
  }
  env.AUTH_SECRET ??= localSecret(dataDir, "auth");
  env.AUTH_TRUST_HOST ??= "true";

  let config: ReturnType<typeof parseEnv>;
  try {
    config = parseEnv({
      ...env,
      DATABASE_URL: env.DATABASE_URL ?? "postgres://embedded/placeholder",
    });
  } catch (e) {
    if (e instanceof EnvError) {
      process.stderr.write(`${e.message}\n`);
      process.exit(1);
    }
    throw e;
  }

  const children: ChildProcess[] = [];
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    say("stopping…");
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const t = setTimeout(() => c.kill("SIGKILL"), 10_000);
            c.once("exit", () => {
              clearTimeout(t);
              resolve();
            });
            c.kill("SIGTERM");
          }),
      ),
    );
    if (pg) await pg.stop().catch(() => undefined);
    say("stopped.");
    process.exit(code);
  };
  process.on("SIGINT", () => void stop(0));
  process.on("SIGTERM", () => void stop(0));

  if (embedded) {
    say(
      `starting embedded Postgres (data in ${path.relative(root, dataDir) || dataDir}/postgres)…`,
    );
    pg = await startEmbeddedPostgres({ dataDir, port: config.LABLINK_EMBEDDED_PG_PORT });
    env.DATABASE_URL = pg.url;
  }
  const databaseUrl = env.DATABASE_URL as string;
  await runMigrations(databaseUrl);
  say("database migrated.");

  const localSize = config.LABLINK_LOCAL_FLEET_SIZE ?? 0;
  if (localSize > 0) {
    const { db, sql } = createDatabase(databaseUrl, { max: 1 });
    await ensureFleet(db, {
      name: "local",
      driver: "local",
      instanceType: "local.sim",
      gpuModel: "NVIDIA A10G (simulated)",
      gpuCount: 1,
      region: "this machine",
      desiredSize: localSize,
      status: "active",
    });
    await sql.end();
  }

  if (!dev) buildIfNeeded();

  const tsx = ["--import", "tsx"];
  const spawnChild = (
    name: string,
    script: string,
    extra: string[] = [],
    nodeFlags: string[] = [],
  ) => {
    const child = spawn(
      process.execPath,
      [...nodeFlags, ...tsx, path.join(root, script), ...extra],
      {
        cwd: root,
        env: { ...env, LABLINK_SERVICE: name, NODE_ENV: dev ? "development" : "production" },
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      },
    );
    child.on("exit", (code, signal) => {
      if (!stopping) {
        process.stderr.write(
          `[lablink] ${name} exited unexpectedly (code ${code}, signal ${signal}); stopping.\n`,
        );
        void stop(1);
      }
    });
    children.push(child);
    return child;
  };
  spawnChild("web", "server/web.ts", dev ? ["--dev"] : [], WEB_NODE_FLAGS);
  spawnChild("worker", "server/jobs/main.ts");

  const host = config.HOST ?? (config.LABLINK_DEV_LOGIN ? "127.0.0.1" : "0.0.0.0");
  const url = `http://${host === "0.0.0.0" ? "localhost" : host}:${config.PORT}`;
  for (let i = 0; i < 600 && !stopping; i++) {
    const ok = await fetch(`${url}/api/health`)
      .then((r) => r.ok)
      .catch(() => false);
    if (ok) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  say(`LabLink is running at ${url}`);
  if (config.LABLINK_DEV_LOGIN) {
    say(
      `sign in at ${url}/signin with any name: choose "Researcher" to claim a VM, "Admin" for the fleet dashboard.`,
    );
  }
  if (localSize > 0)
    say(`local fleet: ${localSize} simulated GPU VMs are booting (ready in a few seconds).`);
  say("press Ctrl-C to stop.");
}

main().catch((err) => {
  process.stderr.write(
    `[lablink] failed to start: ${err instanceof Error ? err.message : String(err)}\n`,
  );
  process.exit(1);
});
