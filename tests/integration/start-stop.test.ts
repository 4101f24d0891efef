/**
 * The real `npm start` (embedded Postgres, web, worker, local fleet's agents) on a fresh data
 * folder: however it is stopped, no process of it is left and the next `npm start` comes up with
 * the same data (a claimed VM is still claimed). Also: a second start while one runs refuses,
 * naming the holder; a start after a crash (pid files left, their pids reused) recovers.
 *
 * One instance at a time, chained: each case stops the instance the previous case started, then
 * starts the next on the same data. Runs the production web app: the first start builds it when
 * there is no current build (CI builds before `npm test`), later starts reuse it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatabase, type Database } from "../../server/db/client";
import { vms } from "../../server/db/schema";
import { claimVm } from "../../server/domain/allocation";
import { descendants } from "../../server/processes";
import { makeUser } from "../fixtures";
import { waitFor } from "./helpers/wait";

const root = path.resolve(import.meta.dirname, "../..");
const dataDir = mkdtempSync(path.join(os.tmpdir(), "lablink-start-stop-"));

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

type App = { npm: ChildProcess; output: () => string; exited: Promise<number | null> };

let webPort = 0;
let pgPort = 0;
const started: App[] = [];

function appEnv(overrides: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.DATABASE_URL;
  delete env.HOST;
  return {
    ...env,
    PORT: String(webPort),
    LABLINK_EMBEDDED_PG_PORT: String(pgPort),
    LABLINK_DATA_DIR: dataDir,
    LABLINK_LOCAL_FLEET_SIZE: "2",
    LOG_LEVEL: "warn",
    // The stop bound is max(20 s, this + 10 s): 20 s here.
    LABLINK_TERRAFORM_CANCEL_GRACE_S: "1",
    ...overrides,
  };
}

/** `npm start` in its own process group, as a terminal or a supervisor would run it. */
function npmStart(env = appEnv()): App {
  const npm = spawn("npm", ["start"], {
    cwd: root,
    env,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let out = "";
  npm.stdout?.on("data", (d) => {
    out += d;
  });
  npm.stderr?.on("data", (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((resolve) => npm.once("exit", (code) => resolve(code)));
  const app = { npm, output: () => out, exited };
  started.push(app);
  return app;
}

async function healthy(app: App, timeoutMs: number): Promise<void> {
  let gone = false;
  void app.exited.then(() => {
    gone = true;
  });
  await waitFor(
    "npm start to answer /api/health",
    async () => {
      if (gone) throw new Error(`npm start exited while starting:\n${app.output()}`);
      return fetch(`http://127.0.0.1:${webPort}/api/health`)
        .then((r) => r.ok)
        .catch(() => false);
    },
    timeoutMs,
    250,
  );
}

const supervisorOf = (app: App) => {
  const pid = descendants(app.npm.pid as number).find((p) =>
    p.command.includes("scripts/start.ts"),
  )?.pid;
  if (!pid) throw new Error("no scripts/start.ts below npm");
  return pid;
};

/**
 * Processes of this app, wherever they are now (reparented ones included): the data folder is in
 * their command line (Postgres), their environment (web, worker), or their agent state folder.
 */
function appProcesses(): { pid: number; command: string }[] {
  const found: { pid: number; command: string }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) continue;
      const command = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0").join(" ");
      const environ = readFileSync(`/proc/${entry}/environ`, "utf8");
      if (command.includes(dataDir) || environ.includes(dataDir))
        found.push({ pid: Number(entry), command });
    } catch {
      // Gone while we looked.
    }
  }
  return found;
}

/** Alive and not a zombie (an orphan that exited stays one until init reaps it). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false;
  }
}

async function expectNothingLeft(app: App, treeBefore: { pid: number; command: string }[]) {
  await waitFor("npm to exit", async () => app.npm.exitCode !== null || app.npm.signalCode, 40_000);
  // The stop is bounded (20 s); allow for it, then nothing of the app may remain.
  await waitFor(
    "no process of the app left",
    async () => appProcesses().length === 0,
    30_000,
    250,
  ).catch(() => {
    throw new Error(
      `left running: ${JSON.stringify(appProcesses(), null, 1)}\noutput:\n${app.output()}`,
    );
  });
  // Postgres had its fast shutdown: a killed one leaves its pid file behind.
  expect(existsSync(path.join(dataDir, "postgres/postmaster.pid"))).toBe(false);
  const survivors = treeBefore.filter((p) => running(p.pid) && !p.command.includes("esbuild"));
  expect(survivors).toEqual([]);
  await waitFor("the supervisor to say it stopped", async () =>
    app.output().includes("[lablink] stopped."),
  ).catch(() => {
    throw new Error(`no "stopped." in:\n${app.output()}`);
  });
}

let db: Database | null = null;
let userId = "";
let claimedVmId = "";
let current: App;

async function openDb(): Promise<Database> {
  const password = readFileSync(path.join(dataDir, "postgres-password.secret"), "utf8").trim();
  return createDatabase(
    `postgres://lablink:${encodeURIComponent(password)}@127.0.0.1:${pgPort}/lablink`,
    { max: 1 },
  );
}

async function expectClaimSurvived() {
  await db?.sql.end();
  db = await openDb();
  const [vm] = await db.db.select().from(vms).where(eq(vms.id, claimedVmId));
  expect(vm?.holderId).toBe(userId);
  expect(vm?.state).toBe("claimed");
  await db.sql.end();
  db = null;
}

const linux = process.platform === "linux" && existsSync("/proc/self/environ");

describe.skipIf(!linux)("npm start stops cleanly however it is stopped", () => {
  beforeAll(async () => {
    webPort = await freePort();
    pgPort = await freePort();
  });
  afterAll(async () => {
    await db?.sql.end();
    for (const app of started) {
      try {
        if (app.npm.pid) process.kill(-app.npm.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    for (const p of appProcesses()) process.kill(p.pid, "SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("starts on a fresh data folder, and a researcher claims a VM", async () => {
    current = npmStart();
    // The first start may build the web app (no current build here): minutes, not seconds.
    await healthy(current, 360_000);
    db = await openDb();
    const user = await makeUser(db.db);
    userId = user.id;
    const { vm } = await waitFor(
      "a ready local VM to claim",
      () =>
        claimVm(db?.db as Database["db"], { userId, actor: { kind: "user", id: userId } }).catch(
          () => null,
        ),
      90_000,
      500,
    );
    claimedVmId = vm.id;
    await db.sql.end();
    db = null;
  }, 480_000);

  it("refuses a second npm start on the same data folder, naming the running one", async () => {
    const supervisor = supervisorOf(current);
    const second = npmStart();
    const code = await second.exited;
    expect(code).not.toBe(0);
    expect(second.output()).toContain("LabLink is already running on this data folder");
    expect(second.output()).toContain(`process ${supervisor}`);
    // The first one is untouched: its Postgres and web server still answer.
    await healthy(current, 5_000);
    await expectClaimSurvived();
  }, 60_000);

  it("refuses a second npm start on another data folder but the same port, naming the holder", async () => {
    const otherDir = mkdtempSync(path.join(os.tmpdir(), "lablink-start-stop-other-"));
    try {
      const web = descendants(supervisorOf(current)).find((p) =>
        p.command.includes("server/web.ts"),
      );
      const second = npmStart(appEnv({ LABLINK_DATA_DIR: otherDir }));
      const code = await second.exited;
      expect(code).not.toBe(0);
      expect(second.output()).toMatch(
        new RegExp(`port ${webPort} \\(web\\) is already in use by process ${web?.pid}`),
      );
      // It stopped before starting anything: no Postgres was initialised there.
      expect(existsSync(path.join(otherDir, "postgres"))).toBe(false);
      await healthy(current, 5_000);
    } finally {
      rmSync(otherDir, { recursive: true, force: true });
    }
  }, 60_000);

  const cases: { name: string; send: (app: App) => void }[] = [
    { name: "SIGTERM to npm", send: (app) => app.npm.kill("SIGTERM") },
    { name: "SIGINT to npm", send: (app) => app.npm.kill("SIGINT") },
    { name: "SIGHUP to npm", send: (app) => app.npm.kill("SIGHUP") },
    {
      name: "SIGTERM to the supervisor",
      send: (app) => process.kill(supervisorOf(app), "SIGTERM"),
    },
    // Ctrl-C: the terminal sends SIGINT to its whole foreground process group.
    {
      name: "SIGINT to the process group (Ctrl-C)",
      send: (app) => process.kill(-(app.npm.pid as number), "SIGINT"),
    },
    // What a closing terminal does: SIGHUP to its whole foreground process group.
    {
      name: "SIGHUP to the process group (terminal closed)",
      send: (app) => process.kill(-(app.npm.pid as number), "SIGHUP"),
    },
  ];
  for (const c of cases) {
    it(`${c.name}: nothing is left, and the next npm start has the same data`, async () => {
      // The worker has started the local fleet's agents: they must go too.
      const tree = await waitFor(
        "the local fleet's agents to run",
        async () => {
          const t = descendants(current.npm.pid as number);
          return t.some((p) => p.command.includes("agent/src/main.ts")) && t;
        },
        30_000,
        250,
      );
      expect(appProcesses().some((p) => / -D \S+\/postgres /.test(p.command))).toBe(true);
      c.send(current);
      await expectNothingLeft(current, tree);
      current = npmStart();
      await healthy(current, 120_000);
      await expectClaimSurvived();
    }, 240_000);
  }

  it("kills what does not stop within the bound, says what it killed, and still stops Postgres cleanly", async () => {
    const tree = await waitFor(
      "the local fleet's agents to run",
      async () => {
        const t = descendants(current.npm.pid as number);
        return t.some((p) => p.command.includes("agent/src/main.ts")) && t;
      },
      30_000,
      250,
    );
    const worker = tree.find((p) => p.command.includes("server/jobs/main.ts"));
    if (!worker) throw new Error("no worker below npm start");
    // A worker that hangs: it cannot act on SIGTERM.
    process.kill(worker.pid, "SIGSTOP");
    const sent = Date.now();
    current.npm.kill("SIGTERM");
    await expectNothingLeft(current, tree);
    const took = Date.now() - sent;
    expect(took).toBeGreaterThan(14_000);
    expect(took).toBeLessThan(30_000);
    const line = current
      .output()
      .split("\n")
      .find((l) => l.includes("did not stop in time"));
    expect(line).toContain(`${worker.pid} (`);
    expect(line).not.toContain("postgres -D");
    current = npmStart();
    await healthy(current, 120_000);
    await expectClaimSurvived();
  }, 240_000);

  it("recovers after a crash that left pid files whose pids now belong to other programs", async () => {
    const tree = descendants(current.npm.pid as number);
    // kill -9 of everything: no shutdown at all.
    process.kill(-(current.npm.pid as number), "SIGKILL");
    for (const p of tree) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // Already gone with its group.
      }
    }
    await waitFor("the killed app to be gone", async () => appProcesses().length === 0, 30_000);
    const postmasterPid = path.join(dataDir, "postgres/postmaster.pid");
    const lablinkPid = path.join(dataDir, "lablink.pid");
    expect(existsSync(postmasterPid)).toBe(true);
    expect(existsSync(lablinkPid)).toBe(true);
    // Pids are reused (in a restarted container they repeat): both files now name a live
    // process that is neither Postgres nor LabLink, and which must not be signalled.
    const bystander = spawn("sleep", ["600"], { stdio: "ignore" });
    const pid = bystander.pid as number;
    try {
      const pm = readFileSync(postmasterPid, "utf8").split("\n");
      pm[0] = String(pid);
      writeFileSync(postmasterPid, pm.join("\n"));
      writeFileSync(lablinkPid, `${JSON.stringify({ pid })}\n`);
      current = npmStart();
      await healthy(current, 120_000);
      await expectClaimSurvived();
      expect(bystander.exitCode).toBeNull();
      expect(bystander.signalCode).toBeNull();
    } finally {
      bystander.kill("SIGKILL");
    }
    const tree2 = descendants(current.npm.pid as number);
    current.npm.kill("SIGTERM");
    await expectNothingLeft(current, tree2);
  }, 240_000);
});
