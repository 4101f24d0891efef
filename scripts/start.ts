/**
 * `npm start`: everything a newcomer needs on one machine.
 *
 *  - Postgres: DATABASE_URL if set, else embedded Postgres with data in .data/ (reused next time)
 *  - migrations, then the local fleet's definition (4 simulated GPU VMs by default)
 *  - the web server (Next.js) and the worker (pg-boss; it runs the local fleet's agent processes)
 *
 * Ctrl-C, SIGTERM or SIGHUP (to npm or to this process), a closed terminal, or npm going away
 * all stop everything in order: the worker (which stops its agents), the web server, then Postgres
 * (fast shutdown); what is still running after the stop bound is killed. Children hold an IPC
 * channel to this process and exit if it dies, so nothing is orphaned even by kill -9; a Postgres
 * left behind that way is stopped on next start.
 *
 * One LabLink per data folder: `lablink.pid` in it names the running supervisor, and a second
 * start says who holds the folder or the ports instead of half-starting.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { createDatabase } from "../server/db/client";
import { type EmbeddedHandle, localSecret, startEmbeddedPostgres } from "../server/db/embedded";
import { runMigrations } from "../server/db/migrate";
import { ensureFleet } from "../server/domain/fleets";
import { EnvError, parseEnv } from "../server/env";
import {
  commandLine,
  descendants,
  isAlive,
  type ProcessInfo,
  portHolder,
} from "../server/processes";
import { WEB_NODE_FLAGS } from "../server/runtime-flags";
import { webBuildState } from "./build-freshness";

const root = path.resolve(import.meta.dirname, "..");
const args = new Set(process.argv.slice(2));
const dev = args.has("--dev");
const say = (msg: string) => process.stdout.write(`[lablink] ${msg}\n`);
// After the terminal closes, writes to it fail (EIO); that must not stop the shutdown half-way.
process.stdout.on("error", () => undefined);
process.stderr.on("error", () => undefined);

class AlreadyRunning extends Error {}

/**
 * Takes the data folder for this process: `lablink.pid` holds the supervisor's pid. A file left by
 * a run that died (its pid gone, or reused by a program that is not LabLink) is taken over.
 */
function lockDataDir(dataDir: string): void {
  mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, "lablink.pid");
  const mine = `${JSON.stringify({ pid: process.pid, startedAt: new Date().toISOString() })}\n`;
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, mine, { flag: "wx" });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw e;
    }
    let holder = 0;
    try {
      holder = Number((JSON.parse(readFileSync(file, "utf8")) as { pid?: unknown }).pid);
    } catch {
      // Unreadable: left half-written by a crash.
    }
    const command = holder > 0 && holder !== process.pid ? commandLine(holder) : null;
    if (command !== null && isAlive(holder) && command.includes("scripts/start.ts")) {
      throw new AlreadyRunning(
        `LabLink is already running on this data folder (${dataDir}): process ${holder} (${command}). ` +
          `Stop it first (Ctrl-C in its terminal, or kill ${holder}), or give this one another LABLINK_DATA_DIR.`,
      );
    }
    rmSync(file, { force: true });
  }
  const release = () => {
    try {
      const held = JSON.parse(readFileSync(file, "utf8")) as { pid?: unknown };
      if (held.pid === process.pid) rmSync(file, { force: true });
    } catch {
      // Already gone.
    }
  };
  process.on("exit", release);
}

/** Fails, naming the holder, when something already listens on host:port. */
async function ensurePortFree(
  port: number,
  host: string,
  what: string,
  leftover: (command: string) => boolean = () => false,
): Promise<void> {
  const inUse = await new Promise<boolean>((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", (e: NodeJS.ErrnoException) =>
      e.code === "EADDRINUSE" ? resolve(true) : reject(e),
    );
    probe.listen({ port, host, exclusive: true }, () => probe.close(() => resolve(false)));
  });
  if (!inUse) return;
  const holder = portHolder(port);
  if (holder && leftover(holder.command)) return;
  const who = holder ? `process ${holder.pid} (${holder.command})` : "another program";
  throw new AlreadyRunning(
    `port ${port} (${what}) is already in use by ${who}. ` +
      `Is LabLink already running? Stop it, or choose another ${what === "web" ? "PORT" : "LABLINK_EMBEDDED_PG_PORT"}.`,
  );
}

/** Builds the Next app when there is no build or the sources are newer than it. */
async function buildIfNeeded(track: (name: string, child: ChildProcess) => void) {
  const buildId = path.join(root, ".next/BUILD_ID");
  const { built, current } = webBuildState(root);
  if (current) return;
  say(
    built
      ? "sources changed since the last build; rebuilding the web app…"
      : "building the web app (first run)…",
  );
  // The build is as new as the sources it read, i.e. as its start: a file saved while it runs
  // must make the next start rebuild, so BUILD_ID gets the start time below.
  const startedS = Date.now() / 1000;
  // Not spawnSync: a stop signal during the build must be handled (and end the build).
  const child = spawn(
    process.execPath,
    [path.join(root, "node_modules/next/dist/bin/next"), "build"],
    {
      cwd: root,
      stdio: "inherit",
      env: { ...process.env, NEXT_TELEMETRY_DISABLED: "1" },
    },
  );
  track("build", child);
  const status = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  if (status !== 0) throw new Error("next build failed (see above)");
  utimesSync(buildId, startedS, startedS);
}

/** Set once there is something to stop: a failed start then stops what it started. */
let onFailure: (() => void) | null = null;

async function main() {
  const env: Record<string, string | undefined> = { ...process.env, NEXT_TELEMETRY_DISABLED: "1" };
  if (env.DATABASE_URL === "") delete env.DATABASE_URL;
  const dataDir = path.resolve(root, env.LABLINK_DATA_DIR ?? ".data");
  try {
    lockDataDir(dataDir);
  } catch (e) {
    if (!(e instanceof AlreadyRunning)) throw e;
    process.stderr.write(`[lablink] not starting: ${e.message}\n`);
    process.exit(1);
  }
  if (args.has("--fresh")) {
    for (const entry of readdirSync(dataDir))
      if (entry !== "lablink.pid")
        rmSync(path.join(dataDir, entry), { recursive: true, force: true });
  }
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

  const children = new Map<string, ChildProcess>();
  let stopping = false;
  // The worker waits up to the Terraform cancel grace (+5 s) for an interrupted apply to save its
  // state; the bound leaves it that, and is 20 s at least.
  const stopBoundMs = Math.max(20, config.LABLINK_TERRAFORM_CANCEL_GRACE_S + 10) * 1000;
  const stop = async (code: number, reason: string) => {
    onFailure = null;
    if (stopping) return;
    stopping = true;
    say(`stopping (${reason})…`);
    const started = Date.now();
    const exited = (c: ChildProcess) =>
      new Promise<void>((resolve) => {
        if (c.exitCode !== null || c.signalCode !== null) return resolve();
        c.once("exit", () => resolve());
      });
    const within = (p: Promise<unknown>, deadline: number) =>
      Promise.race([
        p.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), Math.max(0, deadline - Date.now()))),
      ]);
    // tsx's esbuild helper ends by itself with its parent; it is never "left".
    const below = (pid: number) => descendants(pid).filter((p) => !p.command.includes("esbuild"));
    const killed: ProcessInfo[] = [];
    const kill = (list: ProcessInfo[]) => {
      for (const p of list) {
        try {
          process.kill(p.pid, "SIGKILL");
          killed.push(p);
        } catch {
          // Gone meanwhile.
        }
      }
    };
    // In order: the worker stops its agents (they report to the web server as they go), then the
    // web server, then Postgres. One that overruns is killed with what runs below it; Postgres
    // keeps the last 5 s of the bound for its fast shutdown, so its data is left clean.
    for (const name of ["build", "worker", "web"]) {
      const c = children.get(name);
      if (!c?.pid) continue;
      c.kill("SIGTERM");
      if (await within(exited(c), started + stopBoundMs - 5_000)) continue;
      kill([
        ...below(c.pid),
        { pid: c.pid, ppid: process.pid, command: commandLine(c.pid) ?? name },
      ]);
      await exited(c);
    }
    if (pg)
      await within(
        pg.stop().catch(() => undefined),
        started + stopBoundMs,
      );
    // Whatever still runs below this process now is killed: Postgres past the bound, or one
    // still booting when the stop came (it has no handle yet). Its last processes may take a
    // moment after its pid file is gone.
    for (let i = 0; i < 20 && below(process.pid).length > 0; i++)
      await new Promise((r) => setTimeout(r, 100));
    kill(below(process.pid));
    if (killed.length > 0) {
      say(
        `killed ${killed.length} process(es) that did not stop in time (bound ${stopBoundMs / 1000} s): ${killed
          .map((p) => `${p.pid} (${p.command.slice(0, 120)})`)
          .join(", ")}`,
      );
    }
    say("stopped.");
    process.exit(code);
  };
  onFailure = () => void stop(1, "start-up failed");
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const)
    process.on(signal, () => void stop(0, signal));
  // npm does not pass SIGHUP on, and a shell between npm and us (or npm killed outright) leaves
  // us running under init; a new parent means whoever started us is gone.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) void stop(0, "the process that started it went away");
  }, 500).unref();

  try {
    const host = config.HOST ?? (config.LABLINK_DEV_LOGIN ? "127.0.0.1" : "0.0.0.0");
    await ensurePortFree(config.PORT, host, "web");
    // A Postgres left on our own data folder by a killed run is stopped by startEmbeddedPostgres.
    const ownPostgres = ` -D ${path.join(dataDir, "postgres")} `;
    if (embedded)
      await ensurePortFree(config.LABLINK_EMBEDDED_PG_PORT, "127.0.0.1", "Postgres", (command) =>
        command.includes(ownPostgres),
      );
  } catch (e) {
    if (!(e instanceof AlreadyRunning)) throw e;
    process.stderr.write(`[lablink] not starting: ${e.message}\n`);
    process.exit(1);
  }

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

  if (!dev) await buildIfNeeded((name, child) => children.set(name, child));
  if (stopping) return;

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
        void stop(1, `${name} exited`);
      }
    });
    children.set(name, child);
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
  if (onFailure) onFailure();
  else process.exit(1);
});
