import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTrpcTransport } from "../../agent/src/client";
import { loadConfig } from "../../agent/src/config";
import { DEFAULT_REDIRECT_URL } from "../../agent/src/handoff/crd";
import { HostActions } from "../../agent/src/host-actions";
import { createLogger } from "../../agent/src/log";
import { Agent } from "../../agent/src/loop";
import { ProcProcessLister } from "../../agent/src/usage/processes";
import { workDownloadResponse, workExportsInFlight } from "../../server/api/work-export";
import { issueAgentToken } from "../../server/auth/agent-tokens";
import { auditEvents, type Fleet, type Vm, vms, workExports } from "../../server/db/schema";
import { claimVm, releaseVm } from "../../server/domain/allocation";
import type { Actor } from "../../server/domain/vm-state";
import { setWorkDownloadLimit } from "../../server/domain/work-export";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { startApiServer } from "../http";

/**
 * "Take your work along": a real agent (the Agent loop, the real HTTP transport, HostActions with
 * a temporary home) against the real router and upload endpoint on real Postgres. The download
 * is unpacked with tar and compared file by file; the size limit, who may fetch and upload, and a
 * release during a download are checked against the same running system.
 */
const FAKE_START_HOST = path.resolve(import.meta.dirname, "../../agent/dev/fake-start-host");

let t: TestDatabase;
let server: Awaited<ReturnType<typeof startApiServer>>;
let fleet: Fleet;
let vm: Vm;
let other: Vm;
let otherToken: string;
const dir = mkdtempSync(path.join(os.tmpdir(), "lablink-work-int-"));
const home = path.join(dir, "home");
const tokenFile = path.join(dir, "token");
const log = createLogger({ level: "warn", write: () => {} });
let agent: Agent;
let done: Promise<unknown>;
let ada: Awaited<ReturnType<typeof makeUser>>;
const adaActor = (): Actor => ({ kind: "user", id: ada.id });

async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false | null>,
  ms = 15_000,
) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const row = async () => (await t.db.select().from(vms).where(eq(vms.id, vm.id)))[0] as Vm;
const exportsOf = () => t.db.select().from(workExports).where(eq(workExports.vmId, vm.id));

/** Every regular file under `root`, relative path → contents. */
function filesUnder(root: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (at: string) => {
    for (const e of readdirSync(at, { withFileTypes: true })) {
      const p = path.join(at, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.set(path.relative(root, p), readFileSync(p));
    }
  };
  walk(root);
  return out;
}

function download(userId = ada.id, vmId = vm.id, signal?: AbortSignal) {
  return workDownloadResponse(
    { db: t.db },
    { userId, vmId, actor: { kind: "user", id: userId }, signal },
  );
}

async function claimAndWait() {
  await claimVm(t.db, { userId: ada.id, actor: adaActor() });
  await waitFor("assignment acknowledged", async () => {
    const r = await row();
    return r.state === "claimed" && r.assignmentAckedId === r.assignmentId;
  });
}

beforeAll(async () => {
  t = await createTestDatabase();
  server = await startApiServer(t.db, t.sql, 15);
  fleet = await makeFleet(t.db, { gpuCount: 0 });
  [vm] = (await makeVms(t.db, fleet, 1, "provisioning", { bootId: null })) as [Vm];
  [other] = (await makeVms(t.db, fleet, 1, "provisioning", { bootId: null })) as [Vm];
  otherToken = await issueAgentToken(t.db, other.id);
  writeFileSync(tokenFile, `${await issueAgentToken(t.db, vm.id)}\n`);
  const config = loadConfig({
    NODE_ENV: "test",
    LABLINK_SERVER_URL: server.url,
    LABLINK_AGENT_TOKEN_FILE: tokenFile,
    LABLINK_VM_ID: vm.id,
  });
  const actions = new HostActions({
    stateDir: path.join(dir, "state"),
    user: null,
    simulatedHome: home,
    crd: { startHost: FAKE_START_HOST, hostName: "gpu-vm-9", redirectUrl: DEFAULT_REDIRECT_URL },
    files: { kind: "home" },
    killProcesses: false,
    processes: new ProcProcessLister(),
    log,
  });
  agent = new Agent({
    vmId: vm.id,
    bootId: "boot-1",
    hostname: "gpu-vm-9",
    agentVersion: "0.3.0",
    transport: createTrpcTransport({ serverUrl: server.url, token: config.token }),
    createGpuSource: () => {
      const reading = () => ({
        gpus: [],
        health: { healthy: true, reasons: [] },
        takenAt: new Date(),
        source: "none" as const,
      });
      return { latest: reading, refresh: async () => reading(), dispose: () => {} };
    },
    actions,
    log,
    heartbeatOverrideS: 0.5,
    pollWaitMs: 1_000,
    requestTimeoutMs: 5_000,
    backoff: { baseMs: 50, capMs: 400, minMs: 20 },
  });
  done = actions.init().then(() => agent.run());
  await waitFor("VM ready", async () => (await row()).state === "ready");
  ada = await makeUser(t.db, "researcher", "ada");
  await claimAndWait();
}, 60_000);

afterAll(async () => {
  agent?.stop("stopped");
  await done;
  await server?.close();
  await t?.drop();
  rmSync(dir, { recursive: true, force: true });
});

describe("a researcher takes their work along", () => {
  it("downloads the home folder as a tar.gz that unpacks to the same files", async () => {
    mkdirSync(path.join(home, "work", "results"), { recursive: true });
    writeFileSync(path.join(home, "work", "notes.md"), "# run 7\nloss went down\n");
    writeFileSync(path.join(home, "work", "results", "metrics.csv"), "epoch,loss\n1,0.9\n2,0.4\n");
    // Incompressible, so the archive spans several 1 MiB chunks.
    writeFileSync(path.join(home, "work", "weights.bin"), randomBytes(3 * 1024 * 1024 + 17));
    writeFileSync(path.join(home, "name with spaces.txt"), "ok\n");
    const expected = filesUnder(home);

    const res = await download();
    expect(res.status, res.status === 200 ? "" : await res.text()).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/gzip");
    const folderBytes = Number(res.headers.get("x-lablink-work-bytes"));
    const sum = [...expected.values()].reduce((n, b) => n + b.length, 0);
    expect(folderBytes).toBe(sum);
    const archive = Buffer.from(await res.arrayBuffer());
    expect(archive.length).toBeGreaterThan(3 * 1024 * 1024);

    const out = path.join(dir, "unpacked");
    mkdirSync(out);
    writeFileSync(path.join(dir, "work.tar.gz"), archive);
    execFileSync("tar", ["-xzf", path.join(dir, "work.tar.gz"), "-C", out]);
    const got = filesUnder(out);
    expect([...got.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [name, bytes] of expected) expect(got.get(name)?.equals(bytes), name).toBe(true);

    const [exp] = await exportsOf();
    expect(exp).toMatchObject({ status: "done", bytes: archive.length, folderBytes: sum });
    const audits = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.targetId, vm.id), eq(auditEvents.action, "vm.work_exported")));
    expect(audits).toHaveLength(1);
    expect(workExportsInFlight()).toBe(0);
  });

  it("refuses a folder over the fleet's limit before sending a byte, with the reason", async () => {
    const admin = await makeUser(t.db, "admin", "root-admin");
    await setWorkDownloadLimit(t.db, {
      fleetId: fleet.id,
      maxMib: 1,
      actor: { kind: "user", id: admin.id },
    });
    const res = await download();
    expect(res.status).toBe(413);
    const body = (await res.json()) as { error: string };
    expect(body.error).toMatch(/over this fleet's download limit of 1\.0 MiB/);
    const latest = (await exportsOf()).sort((a, b) => +b.createdAt - +a.createdAt)[0];
    expect(latest).toMatchObject({ status: "failed", bytes: 0 });
    const audit = await t.db
      .select()
      .from(auditEvents)
      .where(eq(auditEvents.action, "fleet.work_download_limit_set"));
    expect(audit[0]?.details).toEqual({ from: 10240, to: 1 });

    await setWorkDownloadLimit(t.db, { fleetId: fleet.id, maxMib: 0, actor: adaActor() });
    const off = await download();
    expect(off.status).toBe(412);
    expect(((await off.json()) as { error: string }).error).toMatch(/turned off/);
    await setWorkDownloadLimit(t.db, { fleetId: fleet.id, maxMib: 10240, actor: adaActor() });
  });

  it("gives nobody but the holder the folder, and takes uploads only from its VM's agent, once", async () => {
    const grace = await makeUser(t.db, "researcher", "grace");
    const admin = await makeUser(t.db, "admin", "an-admin");
    for (const [who, vmId] of [
      [grace.id, vm.id],
      [admin.id, vm.id],
      [ada.id, other.id],
    ] as const) {
      const res = await download(who, vmId);
      expect(res.status).toBe(404);
      expect(((await res.json()) as { error: string }).error).toBe("You do not hold this VM.");
    }

    // A download the agent has not answered yet: park it by asking while the agent is paused.
    const [done0] = await exportsOf();
    const url = (id: string, q = "seq=0&folderBytes=1") =>
      `${server.url}/api/agent/export/${id}?${q}`;
    const post = (id: string, token: string, q?: string) =>
      fetch(url(id, q), {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
        body: "",
      });
    // A finished export cannot be used again (single use), by its own agent or another.
    const ownToken = readFileSync(tokenFile, "utf8").trim();
    expect((await post(done0?.id as string, ownToken)).status).toBe(404);
    expect((await post(done0?.id as string, otherToken)).status).toBe(404);
    // A changed id, no token, a wrong token.
    const doneId = done0?.id as string;
    const changed = `${doneId.slice(0, -1)}${doneId.endsWith("0") ? "1" : "0"}`;
    expect((await post(changed, ownToken)).status).toBe(404);
    expect((await fetch(url(changed), { method: "POST", body: "" })).status).toBe(401);
    expect((await post(changed, "lla_notatoken")).status).toBe(401);
  });

  it("another VM's agent cannot feed a live download", async () => {
    // Hold the real agent's answer back: the download waits for its first chunk meanwhile.
    const res = download();
    const pending = await waitFor("the export row", async () => {
      const rows = await exportsOf();
      return rows.find((r) => r.status === "pending" || r.status === "streaming");
    });
    const stolen = await fetch(`${server.url}/api/agent/export/${pending.id}?seq=0&folderBytes=1`, {
      method: "POST",
      headers: { authorization: `Bearer ${otherToken}` },
      body: "",
    });
    expect(stolen.status).toBe(404);
    const real = await res;
    expect(real.status).toBe(200);
    await real.arrayBuffer();
  });

  it("a researcher who stops the download stops the agent's tar", async () => {
    mkdirSync(path.join(home, "work"), { recursive: true });
    writeFileSync(path.join(home, "work", "big.bin"), randomBytes(6 * 1024 * 1024));
    const res = await download();
    expect(res.status).toBe(200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    expect((await reader.read()).done).toBe(false);
    await waitFor("the agent sending", async () => (agent.exports?.active ?? 0) > 0);
    await reader.cancel();
    await waitFor("the export recorded as cancelled", async () => {
      const rows = await exportsOf();
      return rows.some(
        (r) => r.status === "cancelled" && r.error === "the download was stopped in the browser",
      );
    });
    // Its next chunk is refused (410), and the agent stops.
    await waitFor("the agent stopped", async () => agent.exports?.active === 0);
    expect(workExportsInFlight()).toBe(0);
    expect((await row()).state).toBe("claimed");
  });

  it("a release during a download ends it, and the wipe still happens", async () => {
    mkdirSync(path.join(home, "work"), { recursive: true });
    writeFileSync(path.join(home, "work", "more.bin"), randomBytes(6 * 1024 * 1024));
    const res = await download();
    expect(res.status).toBe(200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    // The browser stops reading; the researcher releases the VM meanwhile.
    await releaseVm(t.db, { userId: ada.id, actor: adaActor() });
    let failed: unknown = null;
    try {
      for (;;) {
        const r = await reader.read();
        if (r.done) break;
      }
    } catch (err) {
      failed = err;
    }
    expect(String(failed)).toMatch(/your VM was released/);
    await waitFor("the export recorded as cancelled", async () => {
      const rows = await exportsOf();
      return rows.some((r) => r.status === "cancelled" && r.error === "the VM was released");
    });
    await waitFor("VM wiped and back in the pool", async () => (await row()).state === "ready");
    expect(readdirSync(home).filter((f) => f === "work")).toEqual([]);
    expect(workExportsInFlight()).toBe(0);
  });
});
