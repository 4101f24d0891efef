import { mkdtempSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTrpcTransport } from "../../agent/src/client";
import { loadConfig } from "../../agent/src/config";
import { DEFAULT_REDIRECT_URL } from "../../agent/src/handoff/crd";
import { AuthorizedKeys } from "../../agent/src/handoff/ssh";
import { HostActions } from "../../agent/src/host-actions";
import { createLogger } from "../../agent/src/log";
import { Agent, type AgentTransport } from "../../agent/src/loop";
import { ProcProcessLister } from "../../agent/src/usage/processes";
import { issueAgentToken } from "../../server/auth/agent-tokens";
import { auditEvents, type Vm, vms } from "../../server/db/schema";
import { claimVm, releaseVm } from "../../server/domain/allocation";
import { handoffStatusFor, requestCrdHandoff } from "../../server/domain/handoff";
import { addSshKey } from "../../server/domain/ssh-keys";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { startApiServer } from "../http";
import { sshKey } from "../ssh-keys";

/**
 * A real agent (the Agent loop with the real tRPC transport and HostActions in a temporary home)
 * against the real router on real Postgres: claim with SSH keys, a CRD hand-off through the
 * stand-in start-host, a server outage and restart, a token rotation, release and wipe, SIGTERM
 * and a reboot.
 */
const HEARTBEAT_S = 0.2;
const FAKE_START_HOST = path.resolve(import.meta.dirname, "../../agent/dev/fake-start-host");
const CODE = "4/0AeanS0ZkQx-Integration_code";

let t: TestDatabase;
let server: Awaited<ReturnType<typeof startApiServer>>;
let vm: Vm;
const dir = mkdtempSync(path.join(os.tmpdir(), "lablink-agent-int-"));
const home = path.join(dir, "home");
const tokenFile = path.join(dir, "token");
const calls = { heartbeat: 0, heartbeatOk: 0, register: 0 };
/** Everything the agents log, at debug level: the setup code and PIN must never appear. */
const logLines: string[] = [];
const log = createLogger({ level: "debug", write: (line) => logLines.push(line) });

async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false | null>,
  ms = 10_000,
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
const audits = (action: string) =>
  t.db
    .select()
    .from(auditEvents)
    .where(and(eq(auditEvents.targetId, vm.id), eq(auditEvents.action, action)));

function startAgent(bootId: string) {
  const config = loadConfig({
    NODE_ENV: "test",
    LABLINK_SERVER_URL: server.url,
    LABLINK_AGENT_TOKEN_FILE: tokenFile,
    LABLINK_VM_ID: vm.id,
  });
  const real = createTrpcTransport({ serverUrl: server.url, token: config.token });
  // Counts attempts, so the test can tell backoff from a busy loop.
  const transport: AgentTransport = {
    ...real,
    heartbeat: async (input, signal) => {
      calls.heartbeat += 1;
      const reply = await real.heartbeat(input, signal);
      calls.heartbeatOk += 1;
      return reply;
    },
    register: (input, signal) => {
      calls.register += 1;
      return real.register(input, signal);
    },
  };
  const actions = new HostActions({
    stateDir: path.join(dir, "state"),
    user: null,
    simulatedHome: home,
    crd: { startHost: FAKE_START_HOST, hostName: "gpu-vm-7", redirectUrl: DEFAULT_REDIRECT_URL },
    files: { kind: "home" },
    killProcesses: false,
    processes: new ProcProcessLister(),
    log,
  });
  const agent = new Agent({
    vmId: vm.id,
    bootId,
    hostname: "gpu-vm-7",
    agentVersion: "0.2.0",
    transport,
    createGpuSource: () => ({
      latest: () => ({
        gpus: [],
        health: { healthy: true, reasons: [] },
        takenAt: new Date(),
        source: "none",
      }),
      refresh: async () => ({
        gpus: [],
        health: { healthy: true, reasons: [] },
        takenAt: new Date(),
        source: "none",
      }),
      dispose: () => {},
    }),
    actions,
    log,
    heartbeatOverrideS: HEARTBEAT_S,
    pollWaitMs: 1_000,
    requestTimeoutMs: 2_000,
    backoff: { baseMs: 50, capMs: 400, minMs: 20 },
    // Production keeps this under a second (SIGTERM must end the process within 2 s); a busy test
    // machine can take longer to answer, and this test checks the report, not the deadline.
    shutdownReportMs: 5_000,
  });
  return { agent, done: actions.init().then(() => agent.run()) };
}

let running: ReturnType<typeof startAgent> | null = null;

beforeAll(async () => {
  t = await createTestDatabase();
  server = await startApiServer(t.db, t.sql, 15);
  const fleet = await makeFleet(t.db, { gpuCount: 0 });
  [vm] = (await makeVms(t.db, fleet, 1, "provisioning", { bootId: null })) as [Vm];
  writeFileSync(tokenFile, `${await issueAgentToken(t.db, vm.id)}\n`);
});
afterAll(async () => {
  running?.agent.stop();
  await running?.done;
  await server.close();
  await t.drop();
});

describe("a real agent against the real server", () => {
  it("claim installs the researcher's SSH keys; a CRD hand-off reaches start-host; release wipes", async () => {
    running = startAgent("boot-1");
    await waitFor("VM ready", async () => (await row()).state === "ready");
    const ada = await makeUser(t.db, "researcher", "ada");
    const key = sshKey("ed25519");
    await addSshKey(t.db, { userId: ada.id, publicKey: `${key} ada@laptop` });
    await claimVm(t.db, { userId: ada.id, actor: { kind: "user", id: ada.id } });

    const keys = new AuthorizedKeys(home, null);
    await waitFor(
      "keys installed",
      async () => (await keys.managed().catch(() => [])).length === 1,
    );
    expect(await keys.managed()).toEqual([key]);
    await waitFor("assignment acknowledged", async () => {
      const r = await row();
      return r.assignmentAckedId === r.assignmentId;
    });

    const { requestId } = await requestCrdHandoff(t.db, {
      userId: ada.id,
      command: `DISPLAY= /opt/google/chrome-remote-desktop/start-host --code="${CODE}" --redirect-url="https://remotedesktop.google.com/_/oauthredirect" --name=$(hostname)`,
      pin: "402913",
      actor: { kind: "user", id: ada.id },
    });
    const status = await waitFor("hand-off done", async () => {
      const s = await handoffStatusFor(t.db, vm.id);
      return s?.status !== "pending" ? s : null;
    });
    expect(status).toMatchObject({ requestId, status: "succeeded", error: null });
    const crdDir = path.join(home, ".config", "chrome-remote-desktop");
    expect(
      readFileSync(path.join(crdDir, "fake-start-host.argv"), "utf8").split("\0").slice(0, -1),
    ).toEqual([`--code=${CODE}`, `--redirect-url=${DEFAULT_REDIRECT_URL}`, "--name=gpu-vm-7"]);
    expect(readFileSync(path.join(crdDir, "fake-start-host.stdin"), "utf8")).toBe(
      "402913\n402913\n",
    );

    await releaseVm(t.db, { userId: ada.id, actor: { kind: "user", id: ada.id } });
    await waitFor("VM back in the pool", async () => (await row()).state === "ready");
    expect(await keys.managed()).toEqual([]);
    expect(() => readFileSync(path.join(crdDir, "host#fake.json"))).toThrow();
  });

  it("survives a server outage with bounded retries, then sends the readings it queued", async () => {
    const port = server.port;
    await server.close();
    const before = calls.heartbeat;
    await new Promise((r) => setTimeout(r, 2_000));
    const attempts = calls.heartbeat - before;
    // Backoff capped at 400 ms: a handful of tries in 2 s, not a busy loop.
    expect(attempts).toBeGreaterThan(2);
    expect(attempts).toBeLessThan(40);
    // One compact reading per failed heartbeat; one may be in flight at either end of the
    // window (sent before the close and failing inside it, or sent but not yet failed at its end).
    const queued = running?.agent.queuedReadings ?? 0;
    expect(queued).toBeGreaterThanOrEqual(attempts - 1);
    expect(queued).toBeLessThanOrEqual(attempts + 1);

    server = await startApiServer(t.db, t.sql, 15, port);
    const [event] = await waitFor("backlog recorded", async () => {
      const events = await audits("agent.backlog");
      return events.length > 0 ? events : null;
    });
    const details = event?.details as { count: number; dropped: number } | undefined;
    expect(details?.count).toBeGreaterThanOrEqual(queued);
    expect(details?.dropped).toBe(0);
    // The server writes the audit row before its answer reaches the agent: wait for the answer.
    await waitFor("queued readings cleared", async () => running?.agent.queuedReadings === 0);
    expect(running?.agent.stopped).toBe(false);
  });

  it("picks up a rotated token from its token file and registers again", async () => {
    const registersBefore = calls.register;
    const rotated = await issueAgentToken(t.db, vm.id); // revokes the old token at once
    await waitFor("a 401 and a re-register attempt", async () => calls.register > registersBefore);
    // Atomically, as an operator's tooling should: the agent must never read half a token.
    writeFileSync(`${tokenFile}.new`, `${rotated}\n`);
    renameSync(`${tokenFile}.new`, tokenFile);
    // Answered heartbeats after the file changed: only the new token gets one (the old one is
    // revoked). Not last_heartbeat_at: a heartbeat accepted just before the rotation may be
    // written after it (heartbeats are flushed in batches).
    const okBefore = calls.heartbeatOk;
    await waitFor("heartbeats with the new token", async () => calls.heartbeatOk > okBefore + 1);
    expect((await row()).healthy).toBe(true);
  });

  it("reports shutting down on stop, and re-registers after a reboot (new boot id)", async () => {
    running?.agent.stop("stopped");
    await running?.done;
    // If this fails, the agent's own account of its goodbye says why.
    const goodbye = logLines.filter((l) => /shutting down|stopping|heartbeat/.test(l)).slice(-8);
    expect(await row(), goodbye.join("\n")).toMatchObject({
      healthy: false,
      healthReasons: ["agent is shutting down"],
    });

    running = startAgent("boot-2");
    await waitFor("healthy after reboot", async () => (await row()).healthy);
    const registers = await audits("agent.register");
    expect(registers.at(-1)?.details).toMatchObject({ bootId: "boot-2", rebooted: true });
    expect((await row()).state).toBe("ready");
  });
});
