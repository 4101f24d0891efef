import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { and, eq } from "drizzle-orm";
import { encode } from "next-auth/jwt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { createTrpcTransport } from "../../agent/src/client";
import { loadConfig } from "../../agent/src/config";
import { DesktopHost } from "../../agent/src/desktop/host";
import { DesktopUsage } from "../../agent/src/desktop/usage";
import { DEFAULT_REDIRECT_URL } from "../../agent/src/handoff/crd";
import { HostActions } from "../../agent/src/host-actions";
import { createLogger } from "../../agent/src/log";
import { Agent } from "../../agent/src/loop";
import { ProcProcessLister } from "../../agent/src/usage/processes";
import { CLOSE_RELEASED } from "../../server/api/desktop-relay";
import { issueAgentToken } from "../../server/auth/agent-tokens";
import { auditEvents, desktopSessions, type Vm, vms } from "../../server/db/schema";
import { claimVm, releaseVm } from "../../server/domain/allocation";
import { desktopStatus } from "../../server/domain/desktop";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { startApiServer } from "../http";

/**
 * The browser desktop end to end below the browser: a real agent (Agent loop, real transport,
 * HostActions with a real Xvfb + x11vnc desktop) and the real relay in front of the real router
 * on real Postgres. A WebSocket client plays the viewer: it must see the VNC server's greeting
 * through the relay, and lose the relay the moment the VM is released.
 */
for (const program of ["Xvfb", "x11vnc"]) {
  try {
    execFileSync("sh", ["-c", `command -v ${program}`]);
  } catch {
    throw new Error(
      `${program} is missing: apt-get install -y xvfb x11vnc openbox xterm x11-xserver-utils`,
    );
  }
}

const SECRET = "desktop-integration-secret-0123456789abcdef";
const COOKIE = "authjs.session-token";
const dir = mkdtempSync(path.join(os.tmpdir(), "lablink-desktop-int-"));
const tokenFile = path.join(dir, "token");
const log = createLogger({ level: "warn" });

let t: TestDatabase;
let server: Awaited<ReturnType<typeof startApiServer>>;
let vm: Vm;
let desktop: DesktopHost;
let agent: Agent;
let done: Promise<unknown>;

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

async function cookieFor(userId: string): Promise<string> {
  const token = await encode({ token: { sub: userId }, secret: SECRET, salt: COOKIE });
  return `${COOKIE}=${token}`;
}

type Opened =
  | { kind: "refused"; status: number }
  | { kind: "open"; ws: WebSocket; first: Promise<Buffer>; closed: Promise<number> };

/** Opens the viewer's socket; resolves once the relay delivered the VNC greeting (or refused). */
function openViewer(
  vmId: string,
  headers: { cookie?: string; origin?: string | null },
): Promise<Opened> {
  const origin = headers.origin === undefined ? server.url : headers.origin;
  const ws = new WebSocket(`${server.url.replace("http", "ws")}/api/desktop/${vmId}/ws`, {
    headers: {
      ...(origin ? { origin } : {}),
      ...(headers.cookie ? { cookie: headers.cookie } : {}),
    },
  });
  return new Promise((resolve, reject) => {
    ws.on("unexpected-response", (_req, res) => {
      resolve({ kind: "refused", status: res.statusCode ?? 0 });
      ws.terminate();
    });
    ws.on("error", (err) => reject(err));
    ws.on("open", () => {
      const first = new Promise<Buffer>((r) => ws.once("message", (d: Buffer) => r(d)));
      const closed = new Promise<number>((r) => ws.once("close", (code) => r(code)));
      resolve({ kind: "open", ws, first, closed });
    });
  });
}

beforeAll(async () => {
  t = await createTestDatabase();
  server = await startApiServer(t.db, t.sql, 15, 0, {}, { authSecret: SECRET });
  const fleet = await makeFleet(t.db, { gpuCount: 0 });
  [vm] = (await makeVms(t.db, fleet, 1, "provisioning", { bootId: null })) as [Vm];
  writeFileSync(tokenFile, `${await issueAgentToken(t.db, vm.id)}\n`);
  const config = loadConfig({
    NODE_ENV: "test",
    LABLINK_SERVER_URL: server.url,
    LABLINK_AGENT_TOKEN_FILE: tokenFile,
    LABLINK_VM_ID: vm.id,
  });
  desktop = new DesktopHost({ mode: "auto", geometry: "800x600", log });
  const actions = new HostActions({
    stateDir: path.join(dir, "state"),
    user: null,
    simulatedHome: path.join(dir, "home"),
    crd: { startHost: "/bin/false", hostName: "vm", redirectUrl: DEFAULT_REDIRECT_URL },
    files: { kind: "none" },
    killProcesses: false,
    processes: new ProcProcessLister(),
    desktop,
    log,
  });
  const none = {
    gpus: [],
    health: { healthy: true, reasons: [] },
    takenAt: new Date(),
    source: "none" as const,
  };
  agent = new Agent({
    vmId: vm.id,
    bootId: "boot-1",
    hostname: "desktop-vm",
    agentVersion: "0.2.0",
    transport: createTrpcTransport({ serverUrl: server.url, token: config.token }),
    createGpuSource: () => ({ latest: () => none, refresh: async () => none, dispose: () => {} }),
    actions,
    // Nobody on the VM by any other sign: only the desktop viewer can make it "in use".
    usage: new DesktopUsage(
      { sample: async () => ({ inUse: false, idleSince: null, signals: [] }) },
      () => desktop.viewers,
      60_000,
    ),
    onDesktop: (command) => {
      void desktop
        .relay({
          ...command,
          serverUrl: server.url,
          token: config.token,
          account: () => actions.desktopAccount(command.assignmentId),
        })
        .catch(() => {});
    },
    log,
    heartbeatOverrideS: 0.2,
    pollWaitMs: 1_000,
    requestTimeoutMs: 3_000,
    backoff: { baseMs: 50, capMs: 400, minMs: 20 },
  });
  done = actions.init().then(() => agent.run());
  await waitFor("VM ready", async () => (await row()).state === "ready");
}, 60_000);

afterAll(async () => {
  agent?.stop("stopped");
  await done;
  await desktop?.stop();
  await server?.close();
  await t?.drop();
});

describe("browser desktop relay", () => {
  it("relays the holder's desktop, refuses everyone else, lets an admin in with an audit row, and closes on release", async () => {
    const ada = await makeUser(t.db, "researcher", "ada");
    const bob = await makeUser(t.db, "researcher", "bob");
    const admin = await makeUser(t.db, "admin", "root-admin");
    await claimVm(t.db, { userId: ada.id, actor: { kind: "user", id: ada.id } });
    await waitFor("assignment acknowledged", async () => {
      const r = await row();
      return r.assignmentAckedId === r.assignmentId;
    });

    // No session, a cross-site page, another researcher (by id), a VM id that does not exist.
    expect(await openViewer(vm.id, {})).toEqual({ kind: "refused", status: 401 });
    expect(
      await openViewer(vm.id, { cookie: await cookieFor(ada.id), origin: "https://evil.example" }),
    ).toEqual({ kind: "refused", status: 403 });
    expect(await openViewer(vm.id, { cookie: await cookieFor(ada.id), origin: null })).toEqual({
      kind: "refused",
      status: 403,
    });
    expect(await openViewer(vm.id, { cookie: await cookieFor(bob.id) })).toEqual({
      kind: "refused",
      status: 404,
    });
    expect(
      await openViewer("00000000-0000-4000-8000-000000000000", { cookie: await cookieFor(ada.id) }),
    ).toEqual({ kind: "refused", status: 404 });
    // A cookie signed with another secret is no session.
    const forged = `${COOKIE}=${await encode({ token: { sub: ada.id }, secret: `${SECRET}x`, salt: COOKIE })}`;
    expect(await openViewer(vm.id, { cookie: forged })).toEqual({ kind: "refused", status: 401 });

    // The holder: the VNC server's greeting arrives through the relay.
    const holder = await openViewer(vm.id, { cookie: await cookieFor(ada.id) });
    if (holder.kind !== "open") throw new Error(`holder refused: ${holder.status}`);
    expect((await holder.first).toString()).toMatch(/^RFB 003\.00\d\n$/);
    expect(desktop.viewers).toBe(1);
    // A viewer connected: the VM is in use (and not idle), with no other sign of anyone.
    await waitFor("in use reported", async () => (await row()).inUse);

    // An admin may look too: audited, and the holder's page learns of it.
    expect((await desktopStatus(t.db, { userId: ada.id, vmId: vm.id })).adminViewing).toBe(false);
    const adminView = await openViewer(vm.id, { cookie: await cookieFor(admin.id) });
    if (adminView.kind !== "open") throw new Error(`admin refused: ${adminView.status}`);
    expect((await adminView.first).toString()).toMatch(/^RFB/);
    const audited = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.targetId, vm.id), eq(auditEvents.action, "desktop.admin_viewed")));
    expect(audited).toHaveLength(1);
    expect(audited[0]?.actorId).toBe(admin.id);
    expect((await desktopStatus(t.db, { userId: ada.id, vmId: vm.id })).adminViewing).toBe(true);
    adminView.ws.close();
    await adminView.closed;
    await waitFor(
      "admin banner gone",
      async () => !(await desktopStatus(t.db, { userId: ada.id, vmId: vm.id })).adminViewing,
    );
    // Bob learns nothing about Ada's VM from the status either.
    await expect(desktopStatus(t.db, { userId: bob.id, vmId: vm.id })).rejects.toThrow(
      /no desktop for you/,
    );

    // The holder's viewer leaves: the desktop still runs, but nobody is using the VM.
    holder.ws.close();
    await holder.closed;
    await waitFor("not in use without a viewer", async () => !(await row()).inUse);
    expect((await row()).state).toBe("claimed");

    // Back again; then release: the relay closes at once with "VM released", the desktop stops.
    const again = await openViewer(vm.id, { cookie: await cookieFor(ada.id) });
    if (again.kind !== "open") throw new Error(`holder refused: ${again.status}`);
    expect((await again.first).toString()).toMatch(/^RFB/);
    await waitFor("in use again", async () => (await row()).inUse);
    const released = Date.now();
    await releaseVm(t.db, { userId: ada.id, actor: { kind: "user", id: ada.id } });
    expect(await again.closed).toBe(CLOSE_RELEASED);
    expect(Date.now() - released).toBeLessThan(3_000);
    expect(server.desktops?.open).toBe(0);
    const open = await t.db.select().from(desktopSessions).where(eq(desktopSessions.vmId, vm.id));
    await waitFor("sessions recorded closed", async () => {
      const rows = await t.db.select().from(desktopSessions).where(eq(desktopSessions.vmId, vm.id));
      return rows.every((r) => r.closedAt !== null);
    });
    expect(open.length).toBe(3);
    await waitFor("VM back in the pool", async () => (await row()).state === "ready");
    expect(desktop.viewers).toBe(0);

    // Ada no longer holds it: no desktop.
    expect(await openViewer(vm.id, { cookie: await cookieFor(ada.id) })).toEqual({
      kind: "refused",
      status: 404,
    });
  }, 60_000);
});
