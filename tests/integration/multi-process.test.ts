/**
 * Two workers (the real server/jobs/main.ts) and two web processes on one database, with a local
 * fleet created through the admin API: each local VM has exactly one agent process (only the
 * fleet's owning worker runs agents), each periodic job runs once per period, concurrent claims
 * through both web processes never give one VM to two researchers, and when the owning worker is
 * killed the other starts the fleet's agents within seconds.
 *
 * The web processes are the production host minus Next (tests/integration/helpers/web-process.ts):
 * a Next build per test run would take minutes.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { and, eq, ne } from "drizzle-orm";
import superjson from "superjson";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { vms } from "../../server/db/schema";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeUser, makeUsers } from "../fixtures";
import { waitFor } from "./helpers/wait";

const root = path.resolve(import.meta.dirname, "../..");
const FLEET_SIZE = 4;
const RESEARCHERS = 8;

let t: TestDatabase;
const children: ChildProcess[] = [];
const webUrls: string[] = [];
const workers: ChildProcess[] = [];

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

/** Starts a tsx script with an IPC channel and waits for its `ready` message. */
async function startProcess(
  name: string,
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(root, script), ...args], {
    cwd: root,
    env,
    stdio: ["ignore", "pipe", "pipe", "ipc"],
  });
  children.push(child);
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start:\n${out}`)), 60_000);
    child.on("message", (m: { type?: string }) => {
      if (m?.type === "ready") {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code) => reject(new Error(`${name} exited (${code}):\n${out}`)));
  });
  return child;
}

function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ["DATABASE_URL", "HOST", "LABLINK_WORKER_METRICS_PORT"]) delete env[k];
  return { ...env, NODE_ENV: "test", LOG_LEVEL: "warn", LABLINK_AGENT_LOG_LEVEL: "warn" };
}

/** A tRPC call over HTTP as `userId` (see web-process.ts). */
async function trpc(base: string, userId: string, procedure: string, input?: unknown) {
  const res = await fetch(`${base}/api/trpc/${procedure}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-test-user": userId },
    body: JSON.stringify(superjson.serialize(input)),
  });
  const body = (await res.json()) as {
    result?: { data: { json: unknown } };
    error?: { json: { message: string; data: { code: string } } };
  };
  return { status: res.status, data: body.result?.data.json, error: body.error?.json };
}

/** Agent processes per VM id (from /proc: argv names the agent, environ its VM) with their parent. */
function agentProcesses(): Map<string, { pid: number; ppid: number }[]> {
  const found = new Map<string, { pid: number; ppid: number }[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (!cmdline.includes("agent/src/main.ts")) continue;
      const vm = /(?:^|\0)LABLINK_VM_ID=([^\0]+)/.exec(
        readFileSync(`/proc/${entry}/environ`, "utf8"),
      )?.[1];
      if (!vm) continue;
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      found.set(vm, [...(found.get(vm) ?? []), { pid: Number(entry), ppid }]);
    } catch {
      // The process ended while we looked.
    }
  }
  return found;
}

let admin: { id: string };
let fleetId = "";

beforeAll(async () => {
  t = await createTestDatabase();
  const ports = [await freePort(), await freePort()];
  const webs = await Promise.all(
    ports.map((port, i) =>
      startProcess(
        `web ${i + 1}`,
        "tests/integration/helpers/web-process.ts",
        [t.url, String(port), "2"],
        baseEnv(),
      ),
    ),
  );
  void webs;
  for (const port of ports) webUrls.push(`http://127.0.0.1:${port}`);
  // Each worker's agents talk to a different web process.
  const started = await Promise.all(
    ports.map((port, i) =>
      startProcess(`worker ${i + 1}`, "server/jobs/main.ts", [], {
        ...baseEnv(),
        DATABASE_URL: t.url,
        PORT: String(port),
        LABLINK_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), `lablink-multi-w${i + 1}-`)),
        LABLINK_LOCAL_FLEET_TICK_S: "1",
        LABLINK_HEARTBEAT_INTERVAL_S: "2",
        LABLINK_RECONCILE_INTERVAL_S: "0",
        LABLINK_TERRAFORM_CANCEL_GRACE_S: "1",
      }),
    ),
  );
  workers.push(...started);
  admin = await makeUser(t.db, "admin");
}, 120_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 1_500));
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await t?.drop();
});

const liveVms = () =>
  t.db
    .select()
    .from(vms)
    .where(and(eq(vms.fleetId, fleetId), ne(vms.state, "terminated")));

/** Every live VM of the fleet has exactly one agent process, all under `parent` when given. */
async function oneAgentEach(parent?: number, size = FLEET_SIZE) {
  const rows = await liveVms();
  const procs = agentProcesses();
  const ok =
    rows.length === size &&
    rows.every((vm) => {
      const p = procs.get(vm.id) ?? [];
      return p.length === 1 && (parent === undefined || p[0]?.ppid === parent);
    });
  return ok ? { rows, procs } : null;
}

describe("two workers and two web processes on one database", () => {
  it("start one agent per local VM, run each periodic job once per period, and never give a VM to two researchers", async () => {
    const created = await trpc(webUrls[0] as string, admin.id, "fleet.create", {
      driver: "local",
      name: "multi",
      instanceType: "local.sim",
      size: FLEET_SIZE,
    });
    expect(created.error, JSON.stringify(created.error)).toBeUndefined();
    fleetId = (created.data as { fleetId: string }).fleetId;

    await waitFor(
      "every VM of the fleet to be ready",
      async () => {
        const rows = await liveVms();
        return rows.length === FLEET_SIZE && rows.every((r) => r.state === "ready");
      },
      60_000,
      250,
    );
    const observedFrom = Date.now();

    // Claims race through both web processes: more researchers than VMs, each asking twice at
    // once (once per web process).
    const researchers = await makeUsers(t.db, RESEARCHERS);
    const answers = await Promise.all(
      researchers.flatMap((r, i) => [
        trpc(webUrls[i % 2] as string, r.id, "vm.claim", { fleetId }),
        trpc(webUrls[(i + 1) % 2] as string, r.id, "vm.claim", { fleetId }),
      ]),
    );
    const won = answers.filter((a) => a.data) as { data: { vmId: string } }[];
    for (const a of answers.filter((x) => !x.data))
      expect(a.error?.data.code, JSON.stringify(a.error)).not.toBe("INTERNAL_SERVER_ERROR");
    const rows = await liveVms();
    const holders = rows.map((r) => r.holderId).filter((h): h is string => h !== null);
    expect(holders).toHaveLength(FLEET_SIZE);
    expect(new Set(holders).size).toBe(FLEET_SIZE);
    // A researcher's two answers name the same VM; no VM went to two researchers.
    const vmOf = new Map<string, string>();
    for (const [i, a] of answers.entries()) {
      if (!a.data) continue;
      const who = researchers[Math.floor(i / 2)]?.id as string;
      const vmId = (a.data as { vmId: string }).vmId;
      expect(vmOf.get(who) ?? vmId).toBe(vmId);
      vmOf.set(who, vmId);
      expect(rows.find((r) => r.id === vmId)?.holderId).toBe(who);
    }
    expect(won.length).toBeGreaterThanOrEqual(FLEET_SIZE);
    expect(new Set(vmOf.values()).size).toBe(vmOf.size);

    // Admin operations on the fleet reach either worker (pg-boss hands each job to one): only the
    // fleet's owner may run them, or the other would start a second agent for every VM.
    for (const [i, size] of [6, 5, 6, FLEET_SIZE].entries()) {
      const scaled = await trpc(webUrls[i % 2] as string, admin.id, "fleet.scale", {
        fleetId,
        size,
      });
      expect(scaled.error, JSON.stringify(scaled.error)).toBeUndefined();
      const opId = (scaled.data as { operation: { id: string } }).operation.id;
      await waitFor(
        `scale to ${size}`,
        async () => {
          const [op] = await t.sql<{ status: string }[]>`
            SELECT status FROM operations WHERE id = ${opId}`;
          return op?.status === "succeeded";
        },
        30_000,
        200,
      );
      const procs = agentProcesses();
      const now = await liveVms();
      expect(
        await oneAgentEach(undefined, size),
        `after scale to ${size}, agents per VM: ${JSON.stringify(now.map((r) => procs.get(r.id)?.length ?? 0))}`,
      ).not.toBeNull();
    }

    // Over more than one periodic local apply (every 30 s in each worker before this fix), each
    // VM keeps exactly one agent process.
    const deadline = Date.now() + 32_000;
    while (Date.now() < deadline) {
      const now = await oneAgentEach();
      const procs = agentProcesses();
      expect(
        now,
        `agents per VM: ${JSON.stringify(rows.map((r) => procs.get(r.id)?.length ?? 0))}`,
      ).not.toBeNull();
      await new Promise((r) => setTimeout(r, 1_000));
    }
    const parents = new Set([...agentProcesses().values()].flat().map((p) => p.ppid));
    expect(parents.size).toBe(1);

    // Both workers send each periodic job every period; pg-boss keeps one per period.
    const windowS = (Date.now() - observedFrom) / 1000;
    const jobs = await t.sql<{ name: string; n: number; slots: number }[]>`
      SELECT name, count(*)::int AS n, count(DISTINCT singleton_on)::int AS slots
      FROM pgboss.job
      WHERE name IN ('vm.sweep-silent', 'fleet.run-schedules', 'vm.expire-holds')
        AND created_on >= to_timestamp(${observedFrom / 1000}) AT TIME ZONE 'UTC'
      GROUP BY name`;
    const period: Record<string, number> = {
      "vm.sweep-silent": 10,
      "fleet.run-schedules": 15,
      "vm.expire-holds": 30,
    };
    expect(jobs.map((j) => j.name).sort()).toEqual(Object.keys(period).sort());
    for (const j of jobs) {
      expect(j.n, `${j.name}: one job per period`).toBe(j.slots);
      expect(j.n, j.name).toBeLessThanOrEqual(Math.ceil(windowS / (period[j.name] ?? 1)) + 1);
    }
  }, 150_000);

  it("when the owning worker is killed, the other starts the fleet's agents within seconds", async () => {
    const [owner] = new Set([...agentProcesses().values()].flat().map((p) => p.ppid));
    const victim = workers.find((w) => w.pid === owner);
    const survivor = workers.find((w) => w.pid !== owner);
    expect(victim).toBeDefined();
    victim?.kill("SIGKILL");
    const killedAt = Date.now();
    await waitFor("the other worker's agents", () => oneAgentEach(survivor?.pid), 20_000, 250);
    const tookOverS = (Date.now() - killedAt) / 1000;
    expect(tookOverS).toBeLessThan(20);
    // And they work: every VM's new agent heartbeats, and no VM lost its state or holder.
    await waitFor(
      "a heartbeat from every new agent",
      async () =>
        (await liveVms()).every(
          (r) =>
            ["ready", "claimed"].includes(r.state) &&
            (r.lastHeartbeatAt?.getTime() ?? 0) > killedAt,
        ),
      30_000,
      250,
    );
    expect((await liveVms()).filter((r) => r.holderId)).toHaveLength(FLEET_SIZE);
    console.info(`local fleet taken over in ${tookOverS.toFixed(1)} s`);
  }, 60_000);
});
