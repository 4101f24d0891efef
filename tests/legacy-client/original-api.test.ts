import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, type Vm, vmLogs, vms } from "../../server/db/schema";
import { claimVm, releaseVm } from "../../server/domain/allocation";
import { handoffStatusFor, requestCrdHandoff } from "../../server/domain/handoff";
import { flushHeartbeatBuffers } from "../../server/domain/heartbeat-buffer";
import {
  CLIENT_GPU_NA,
  CLIENT_GPU_UNHEALTHY,
  NO_HEALTH_YET,
} from "../../server/domain/legacy-client";
import { tableCounts } from "../api/harness";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeAgent, makeFleet, makeUser, makeVms } from "../fixtures";
import { startApiServer } from "../http";
import { LegacyClient } from "./client";

/**
 * The original LabLink client API (server/api/original-api.ts) driven by a client written from
 * its contract (tests/legacy-client/client.ts) against a real server on real Postgres: what a VM
 * built from an original LabLink client image does, with its own token as API_TOKEN.
 */
const CODE = "4/0AeanS0ZkQx-Legacy_client_code";
const PIN = "402913";

let t: TestDatabase;
let server: Awaited<ReturnType<typeof startApiServer>>;

beforeAll(async () => {
  t = await createTestDatabase();
  server = await startApiServer(t.db, t.sql, 15);
});
afterAll(async () => {
  await server?.close();
  await t?.drop();
});

const row = async (id: string) => (await t.db.select().from(vms).where(eq(vms.id, id)))[0] as Vm;

/** A VM of a fleet (provisioning, as Terraform leaves it) and a client holding its own token. */
async function newVm(
  options: { onError?: "fail" | "continue"; gpuCount?: number; state?: Vm["state"] } = {},
) {
  const fleet = await makeFleet(t.db, {
    gpuCount: options.gpuCount ?? 1,
    config: options.onError ? { startupOnError: options.onError } : {},
    clientImageCompat: true,
  });
  const [vm] = (await makeVms(t.db, fleet, 1, options.state ?? "provisioning", {
    bootId: null,
    healthy: false,
  })) as [Vm];
  const client = new LegacyClient({
    ALLOCATOR_URL: server.url,
    API_TOKEN: await makeAgent(t.db, vm),
    VM_NAME: vm.name,
  });
  return { fleet, vm, client };
}

describe("a VM running an original LabLink client image", () => {
  it("starts up: initializing, running and a healthy GPU put it in the pool; GET vm-status follows", async () => {
    const { vm, client } = await newVm();
    expect(await client.status()).toEqual({
      status: 200,
      body: { hostname: vm.name, status: "initializing" },
    });
    expect(await client.reportStatus("initializing")).toEqual({
      status: 200,
      body: { status: "success" },
    });
    let now = await row(vm.id);
    expect(now.state).toBe("booting");
    expect(now.bootId).toMatch(/^client-/);
    expect(now.healthReasons).toEqual([NO_HEALTH_YET]);

    expect((await client.reportStatus("running")).status).toBe(200);
    now = await row(vm.id);
    expect(now.state).toBe("ready");
    expect(now.healthy).toBe(false); // not claimable before the client's first health report
    expect((await client.status()).body).toEqual({ hostname: vm.name, status: "running" });

    expect(await client.gpuHealth("Healthy")).toEqual({
      status: 200,
      body: { status: "success" },
    });
    now = await row(vm.id);
    expect(now.healthy).toBe(true);
    expect(now.healthReasons).toEqual([]);
    // Unknown status names are accepted and change nothing.
    expect((await client.reportStatus("warming-up")).status).toBe(200);
    expect((await row(vm.id)).state).toBe("ready");
  });

  it("reports GPU health: Unhealthy and N/A take it out of the pool, N/A is fine without GPUs", async () => {
    const { vm, client } = await newVm({ state: "ready" });
    await client.gpuHealth("Unhealthy");
    expect(await row(vm.id)).toMatchObject({
      healthy: false,
      healthReasons: [CLIENT_GPU_UNHEALTHY],
    });
    await client.gpuHealth("Healthy");
    expect(await row(vm.id)).toMatchObject({ healthy: true, healthReasons: [] });
    await client.gpuHealth("N/A");
    expect(await row(vm.id)).toMatchObject({ healthy: false, healthReasons: [CLIENT_GPU_NA] });
    const flips = await t.db
      .select({ action: auditEvents.action })
      .from(auditEvents)
      .where(eq(auditEvents.targetId, vm.id));
    // A flip is audited; the first report found it unhealthy already (not yet reported).
    expect(flips.map((f) => f.action)).toEqual(["vm.healthy", "vm.unhealthy"]);

    const cpuOnly = await newVm({ state: "ready", gpuCount: 0 });
    await cpuOnly.client.gpuHealth("N/A");
    expect((await row(cpuOnly.vm.id)).healthy).toBe(true);

    const bad = await client.request("POST", "/api/gpu_health", {
      hostname: vm.name,
      gpu_status: "Great",
    });
    expect(bad.status).toBe(400);
    expect(bad.body).toEqual({ error: expect.any(String) });
  });

  it("reports in-use and heartbeats", async () => {
    const { vm, client } = await newVm();
    await client.reportStatus("running");
    expect((await client.inUse(true)).body).toEqual({ status: "success" });
    expect(await row(vm.id)).toMatchObject({ inUse: true, idleSince: null });
    await client.inUse(false);
    const idle = await row(vm.id);
    expect(idle.inUse).toBe(false);
    expect(idle.idleSince).toBeInstanceOf(Date);

    const before = idle.lastHeartbeatAt as Date;
    await new Promise((r) => setTimeout(r, 20));
    expect(await client.heartbeat()).toEqual({ status: 200, body: { status: "success" } });
    await flushHeartbeatBuffers();
    expect((await row(vm.id)).lastHeartbeatAt?.getTime()).toBeGreaterThan(before.getTime());
    const missing = await client.request("POST", "/api/heartbeat", {});
    expect(missing).toEqual({ status: 400, body: { error: "vm_id is required." } });
  });

  it("ships logs: a -docker log group is the container's log, any other cloud-init's", async () => {
    const { vm, client } = await newVm();
    await client.reportStatus("initializing");
    expect((await client.logs(["pulling image", "container up"], true)).body).toEqual({
      status: "success",
    });
    await client.logs(["Cloud-init v. 24.1 running 'modules:final'"], false);
    const lines = await t.db
      .select({ source: vmLogs.source, message: vmLogs.message })
      .from(vmLogs)
      .where(eq(vmLogs.vmId, vm.id))
      .orderBy(vmLogs.id);
    expect(lines).toEqual([
      { source: "container", message: "pulling image" },
      { source: "container", message: "container up" },
      { source: "cloud-init", message: "Cloud-init v. 24.1 running 'modules:final'" },
    ]);
    const bad = await client.request("POST", "/api/vm-logs", {
      log_group: "x",
      log_stream: vm.name,
      messages: "not a list",
    });
    expect(bad.status).toBe(400);
  });

  it("sends boot timings (epoch seconds) that land in the VM's boot record", async () => {
    const { vm, client } = await newVm();
    await client.reportStatus("initializing");
    const start = 1_767_225_600; // 2026-01-01T00:00:00Z
    expect(
      (
        await client.metrics({
          cloud_init_start: start,
          cloud_init_end: start + 95,
          cloud_init_duration_seconds: 95,
          container_start: start + 100,
          container_end: start + 130,
          container_startup_duration_seconds: 30,
        })
      ).body,
    ).toEqual({ status: "success" });
    const timings = (await row(vm.id)).bootTimings;
    expect(timings).toMatchObject({
      cloudInitStartedAt: "2026-01-01T00:00:00.000Z",
      cloudInitFinishedAt: "2026-01-01T00:01:35.000Z",
      cloudInitStatus: "done",
      containerStartedAt: "2026-01-01T00:01:40.000Z",
      containerReadyAt: "2026-01-01T00:02:10.000Z",
    });
    expect(timings?.registeredAt).toEqual(expect.any(String));
    expect((await client.metrics({})).status).toBe(400);
  });

  it("a start-up error fails the VM when the fleet's on-error policy is fail, and not otherwise", async () => {
    const failing = await newVm({ onError: "fail" });
    await failing.client.reportStatus("initializing");
    expect((await failing.client.reportStatus("error")).status).toBe(200);
    expect((await row(failing.vm.id)).state).toBe("failed");
    expect((await failing.client.status()).body).toEqual({
      hostname: failing.vm.name,
      status: "error",
    });

    const going = await newVm({ onError: "continue" });
    await going.client.reportStatus("initializing");
    await going.client.reportStatus("error");
    expect((await row(going.vm.id)).state).toBe("ready");
  });

  it("rebooting takes it out of the pool until it starts again", async () => {
    const { vm, client } = await newVm();
    await client.reportStatus("running");
    await client.gpuHealth("Healthy");
    await client.reportStatus("rebooting");
    expect((await row(vm.id)).healthy).toBe(false);
    expect((await client.status()).body).toEqual({ hostname: vm.name, status: "rebooting" });
    await client.gpuHealth("Healthy"); // in flight from before the reboot: changes nothing
    expect((await row(vm.id)).healthy).toBe(false);
    await client.reportStatus("initializing");
    await client.reportStatus("running");
    await client.gpuHealth("Healthy");
    expect(await row(vm.id)).toMatchObject({ state: "ready", healthy: true });
  });

  it("waits in /vm_startup until the holder hands a Chrome Remote Desktop command over", async () => {
    const { fleet, vm, client } = await newVm({ gpuCount: 0 });
    await client.reportStatus("running");
    await client.gpuHealth("N/A");
    const user = await makeUser(t.db);
    const actor = { kind: "user" as const, id: user.id };
    const { vm: claimed } = await claimVm(t.db, { userId: user.id, fleetId: fleet.id, actor });
    expect(claimed.id).toBe(vm.id);

    let settled = false;
    const waiting = client.vmStartup().finally(() => {
      settled = true;
    });
    await new Promise((r) => setTimeout(r, 500));
    expect(settled).toBe(false);
    expect(server.events.waiting(vm.id)).toBe(1);

    const { requestId } = await requestCrdHandoff(t.db, {
      userId: user.id,
      command: `DISPLAY= /opt/google/chrome-remote-desktop/start-host --code="${CODE}" --redirect-url="https://remotedesktop.google.com/_/oauthredirect" --name=$(hostname)`,
      pin: PIN,
      actor,
    });
    const reply = await waiting;
    expect(reply).toEqual({
      status: 200,
      body: {
        status: "success",
        pin: PIN,
        command: `DISPLAY= /opt/google/chrome-remote-desktop/start-host --code="${CODE}" --redirect-url="https://remotedesktop.google.com/_/oauthredirect" --name=$(hostname)`,
      },
    });
    // Delivered: the researcher sees it connected, and the sealed code and PIN are gone.
    expect(await handoffStatusFor(t.db, vm.id)).toMatchObject({ requestId, status: "succeeded" });

    // A command already stored is answered at once.
    await requestCrdHandoff(t.db, {
      userId: user.id,
      command: `--code="${CODE}"`,
      pin: PIN,
      actor,
    });
    const started = Date.now();
    const again = await client.vmStartup();
    expect(again.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(2_000);

    // Released: the client cannot wipe, so its next call has the VM replaced.
    await releaseVm(t.db, { userId: user.id, actor });
    await client.heartbeat();
    expect((await row(vm.id)).state).toBe("terminating");
  });
});

describe("refusals", () => {
  it("a missing, non-Bearer or wrong token is refused with the original's bodies", async () => {
    const { client } = await newVm();
    const counts = await tableCounts(t.db);
    const missing = { error: "Missing or invalid Authorization header." };
    expect(await client.request("POST", "/api/heartbeat", {}, { authorization: null })).toEqual({
      status: 401,
      body: missing,
    });
    expect(
      await client.request("POST", "/api/heartbeat", {}, { authorization: "Token abc" }),
    ).toEqual({ status: 401, body: missing });
    const invalid = { error: "Invalid API token." };
    expect(
      await client.request(
        "POST",
        "/vm_startup",
        { hostname: client.env.VM_NAME },
        {
          authorization: "Bearer the-shared-token-of-the-original",
        },
      ),
    ).toEqual({ status: 401, body: invalid });
    const forged = `${client.env.API_TOKEN.slice(0, -4)}AAAA`;
    expect(
      await client.request("GET", `/api/vm-status/${client.env.VM_NAME}`, undefined, {
        authorization: `Bearer ${forged}`,
      }),
    ).toEqual({ status: 401, body: invalid });
    expect(await tableCounts(t.db)).toEqual(counts);
  });

  it("VM A's token naming VM B gets 403 on every route and changes nothing", async () => {
    const a = await newVm();
    const b = await newVm();
    await b.client.reportStatus("running");
    await b.client.gpuHealth("Healthy");
    const before = await row(b.vm.id);
    const counts = await tableCounts(t.db);
    const asA = new LegacyClient({ ...b.client.env, API_TOKEN: a.client.env.API_TOKEN });
    const replies = [
      await asA.vmStartup(),
      await asA.gpuHealth("Unhealthy"),
      await asA.inUse(true),
      await asA.heartbeat(),
      await asA.reportStatus("rebooting"),
      await asA.status(),
      await asA.logs(["forged"], true),
      await asA.metrics({ cloud_init_start: 1 }),
    ];
    for (const r of replies) {
      expect(r.status).toBe(403);
      expect(r.body).toEqual({ error: expect.any(String) });
    }
    await flushHeartbeatBuffers();
    const after = await row(b.vm.id);
    expect(after).toEqual(before);
    expect(await tableCounts(t.db)).toEqual(counts);
  });

  it("malformed bodies are 400 in the original's shape, oversized ones 413, never 500", async () => {
    const { client } = await newVm();
    expect(await client.request("POST", "/vm_startup", {})).toEqual({
      status: 400,
      body: { error: "Hostname is required." },
    });
    expect(
      await client.request("POST", "/vm_startup", undefined, { rawBody: "{not json" }),
    ).toEqual({ status: 400, body: { error: "Hostname is required." } });
    expect((await client.request("POST", "/api/vm-status", [1, 2])).status).toBe(400);
    expect(
      (
        await client.request("POST", "/api/update_inuse_status", {
          hostname: client.env.VM_NAME,
          status: "yes",
        })
      ).status,
    ).toBe(400);
    const big = await client.request("POST", "/api/heartbeat", {
      vm_id: client.env.VM_NAME,
      pad: "x".repeat(300 * 1024),
    });
    expect(big).toEqual({ status: 413, body: { error: "Request body too large." } });
    // A log batch may be bigger, up to its own cap.
    const batch = await client.logs(
      Array.from({ length: 600 }, (_, i) => `line ${i} ${"y".repeat(500)}`),
      true,
    );
    expect(batch.status).toBe(200);
    const lines = await t.db
      .select({ id: vmLogs.id })
      .from(vmLogs)
      .innerJoin(vms, and(eq(vms.id, vmLogs.vmId), eq(vms.name, client.env.VM_NAME)));
    expect(lines).toHaveLength(600);
  });
});
