import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
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
import { issueAgentToken } from "../../server/auth/agent-tokens";
import { S3ArchiveSigner } from "../../server/cloud/s3/archive-signer";
import { auditEvents, type Fleet, type Vm, vms, workArchives } from "../../server/db/schema";
import { claimVm, releaseVm } from "../../server/domain/allocation";
import type { Actor } from "../../server/domain/vm-state";
import {
  myArchives,
  registerArchiveSigner,
  setWorkArchive,
} from "../../server/domain/work-archive";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { startApiServer } from "../http";

/**
 * Work archives on release: a real agent (Agent loop, real transport, HostActions with a temporary
 * home) against the real router on real Postgres; the server presigns with the real AWS SDK
 * against an endpoint override, a local HTTP server standing in for S3 that receives the PUT.
 * Checked: the upload is the tar.gz of the files and arrived before the wipe; a failing store is
 * tried a bounded number of times, then the VM is wiped anyway and the researcher told; the
 * profile's link fetches the archive; nobody else sees it.
 */
const FAKE_START_HOST = path.resolve(import.meta.dirname, "../../agent/dev/fake-start-host");

let t: TestDatabase;
let server: Awaited<ReturnType<typeof startApiServer>>;
let fleet: Fleet;
let vm: Vm;
const dir = mkdtempSync(path.join(os.tmpdir(), "lablink-archive-int-"));
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

type Put = {
  path: string;
  query: URLSearchParams;
  body: Buffer;
  length: string | undefined;
  filesStillThere: boolean;
};
const puts: Put[] = [];
const stored = new Map<string, Buffer>();
let storeFails = false;
let store: http.Server;
let storeUrl = "";

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

async function claimAndWait() {
  await claimVm(t.db, { userId: ada.id, actor: adaActor() });
  await waitFor("assignment acknowledged", async () => {
    const r = await row();
    return r.state === "claimed" && r.assignmentAckedId === r.assignmentId;
  });
}

beforeAll(async () => {
  store = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://store");
      if (req.method === "PUT") {
        puts.push({
          path: url.pathname,
          query: url.searchParams,
          body: Buffer.concat(chunks),
          length: req.headers["content-length"],
          // The wipe must not have started yet.
          filesStillThere: existsSync(path.join(home, "work", "notes.md")),
        });
        if (storeFails) {
          res.writeHead(503).end("<Error><Code>SlowDown</Code></Error>");
          return;
        }
        stored.set(url.pathname, Buffer.concat(chunks));
        res.writeHead(200, { etag: '"x"' }).end();
        return;
      }
      const body = stored.get(url.pathname);
      if (req.method === "GET" && body && url.searchParams.has("X-Amz-Signature")) {
        res.writeHead(200, { "content-length": body.length }).end(body);
        return;
      }
      res.writeHead(404).end();
    });
  });
  await new Promise<void>((r) => store.listen(0, "127.0.0.1", r));
  storeUrl = `http://127.0.0.1:${(store.address() as AddressInfo).port}`;
  registerArchiveSigner(
    new S3ArchiveSigner({
      endpoint: storeUrl,
      credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG" },
    }),
  );
  t = await createTestDatabase();
  server = await startApiServer(t.db, t.sql, 15);
  fleet = await makeFleet(t.db, { gpuCount: 0 });
  [vm] = (await makeVms(t.db, fleet, 1, "provisioning", { bootId: null })) as [Vm];
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
    archive: { attempts: 3, retryMs: 50, timeoutMs: 5_000 },
    pollWaitMs: 1_000,
    requestTimeoutMs: 5_000,
    backoff: { baseMs: 50, capMs: 400, minMs: 20 },
  });
  done = actions.init().then(() => agent.run());
  await waitFor("VM ready", async () => (await row()).state === "ready");
  ada = await makeUser(t.db, "researcher", "ada");
  await setWorkArchive(t.db, {
    fleetId: fleet.id,
    archive: { bucket: "lab-work", prefix: "lablink/work", region: "us-west-2", retentionDays: 7 },
    actor: { kind: "system", id: null },
  });
}, 60_000);

afterAll(async () => {
  registerArchiveSigner(null);
  await new Promise((r) => store?.close(r));
  agent?.stop("stopped");
  await done;
  await server?.close();
  await t?.drop();
  rmSync(dir, { recursive: true, force: true });
});

describe("the work folder goes to S3 before the wipe", () => {
  it("uploads the tar.gz of the home folder, then wipes; the profile links to it", async () => {
    await claimAndWait();
    const { assignmentId } = await row();
    mkdirSync(path.join(home, "work", "results"), { recursive: true });
    writeFileSync(path.join(home, "work", "notes.md"), "# run 9\n");
    writeFileSync(path.join(home, "work", "results", "m.csv"), "a,b\n1,2\n");
    writeFileSync(path.join(home, "work", "blob.bin"), randomBytes(200_000));
    const expected = filesUnder(home);

    await releaseVm(t.db, { userId: ada.id, actor: adaActor() });
    await waitFor("wiped and ready", async () => (await row()).state === "ready");

    expect(puts).toHaveLength(1);
    const put = puts[0] as Put;
    expect(put.path).toBe(`/lab-work/lablink/work/${ada.id}/${assignmentId}.tar.gz`);
    expect(put.query.get("X-Amz-Algorithm")).toBe("AWS4-HMAC-SHA256");
    expect(put.query.get("X-Amz-Credential")).toMatch(
      /^AKIDEXAMPLE\/\d{8}\/us-west-2\/s3\/aws4_request$/,
    );
    expect(put.length).toBe(String(put.body.length));
    expect(put.filesStillThere).toBe(true);
    expect(existsSync(path.join(home, "work"))).toBe(false);

    const out = path.join(dir, "from-s3");
    mkdirSync(out);
    writeFileSync(path.join(dir, "s3.tar.gz"), put.body);
    execFileSync("tar", ["-xzf", path.join(dir, "s3.tar.gz"), "-C", out]);
    const got = filesUnder(out);
    expect([...got.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [name, bytes] of expected) expect(got.get(name)?.equals(bytes), name).toBe(true);

    const [archive] = await myArchives(t.db, ada.id);
    expect(archive).toMatchObject({ status: "uploaded", bytes: put.body.length, error: null });
    const days = ((archive?.expiresAt.getTime() ?? 0) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(6.9);
    expect(days).toBeLessThanOrEqual(7);
    // The profile's link is a presigned GET of the same object.
    const res = await fetch(archive?.url as string);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(put.body)).toBe(true);
    const audits = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.targetId, vm.id), eq(auditEvents.action, "vm.work_archived")));
    expect(audits).toHaveLength(1);

    // Only their own.
    const grace = await makeUser(t.db, "researcher", "grace");
    expect(await myArchives(t.db, grace.id)).toEqual([]);
  });

  it("a store that keeps failing is tried 3 times, then the VM is wiped and the researcher told", async () => {
    storeFails = true;
    puts.length = 0;
    await claimAndWait();
    const { assignmentId } = await row();
    mkdirSync(path.join(home, "work"), { recursive: true });
    writeFileSync(path.join(home, "work", "notes.md"), "lost?\n");
    await releaseVm(t.db, { userId: ada.id, actor: adaActor() });
    await waitFor("wiped and ready", async () => (await row()).state === "ready");
    expect(puts).toHaveLength(3);
    expect(existsSync(path.join(home, "work"))).toBe(false);
    const [failed] = await t.db
      .select()
      .from(workArchives)
      .where(eq(workArchives.assignmentId, assignmentId as string));
    expect(failed).toMatchObject({ status: "failed" });
    expect(failed?.error).toMatch(/upload failed after 3 tries: storage answered HTTP 503/);
    const mine = await myArchives(t.db, ada.id);
    expect(mine[0]).toMatchObject({ status: "failed", url: null });
  });
});
