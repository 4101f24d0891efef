import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AuditEvent, auditEvents, type Fleet, type Vm, vms } from "../../server/db/schema";
import { SHUTTING_DOWN } from "../../server/domain/agents";
import { MAX_POINTS_PER_GPU, pruneGpuSamples } from "../../server/domain/gpu-history";
import { flushHeartbeatBuffers, HeartbeatBuffer } from "../../server/domain/heartbeat-buffer";
import { pruneGpuSamplesJob } from "../../server/jobs/definitions";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeAgent, makeFleet, makeUser, makeVms } from "../fixtures";
import { apiClient } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let fleet: Fleet;
let admin: { id: string };
let researcher: { id: string };

const gpu = (index: number, util: number, temp = 50) => ({
  index,
  uuid: `GPU-${index}`,
  name: "NVIDIA A10G",
  temperatureC: temp,
  utilizationPct: util,
  memoryUsedMiB: 1000 + util,
  memoryTotalMiB: 23028,
  powerDrawW: 100,
  healthy: true,
  reasons: [],
});

const beat = (vmId: string, util: number, extra: object = {}) => ({
  vmId,
  bootId: "boot-1",
  gpus: [gpu(0, util), gpu(1, util)],
  health: { healthy: true, reasons: [] },
  inUse: false,
  idleSince: null,
  ...extra,
});

const row = async (vmId: string) =>
  (await t.db.select().from(vms).where(eq(vms.id, vmId)))[0] as Vm;
const sampleCount = async (vmId: string) =>
  (
    await t.db.execute<{ n: number }>(
      sql`SELECT count(*)::int AS n FROM gpu_samples WHERE vm_id = ${vmId}`,
    )
  )[0]?.n;

/** A VM with its own token, and a helper that sends its heartbeats through the API. */
async function agentVm() {
  const [vm] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
  const token = await makeAgent(t.db, vm);
  const send = (input: object) =>
    api.mutate("agent.heartbeat", input, { authorization: `Bearer ${token}` });
  return { vm, send };
}

beforeAll(async () => {
  t = await createTestDatabase();
  // A flush interval far longer than the test steps: only an explicit flush writes the buffer.
  api = apiClient(t.db, { settings: { heartbeatFlushMs: 60_000, gpuSampleIntervalS: 60 } });
  fleet = await makeFleet(t.db, { gpuCount: 2 });
  admin = await makeUser(t.db, "admin");
  researcher = await makeUser(t.db, "researcher");
});
afterAll(() => t.drop());

describe("heartbeat coalescing", () => {
  it("writes the first heartbeat at once, buffers readings that change nothing material", async () => {
    const { vm, send } = await agentVm();
    expect((await send(beat(vm.id, 10))).status).toBe(200);
    const first = await row(vm.id);
    expect(first.gpus[0]?.utilizationPct).toBe(10);
    expect(first.lastHeartbeatAt).toBeInstanceOf(Date);

    const res = await send(beat(vm.id, 70));
    expect(res.status).toBe(200);
    expect(res.data).toMatchObject({
      vmId: vm.id,
      state: "ready",
      commands: [],
      reRegister: false,
    });
    // Not written yet: only fresh readings.
    expect((await row(vm.id)).gpus[0]?.utilizationPct).toBe(10);
    await flushHeartbeatBuffers();
    const after = await row(vm.id);
    expect(after.gpus[0]?.utilizationPct).toBe(70);
    expect(after.lastHeartbeatAt?.getTime()).toBeGreaterThan(first.lastHeartbeatAt?.getTime() ?? 0);
  });

  it("writes a health flip at once, with its audit row", async () => {
    const { vm, send } = await agentVm();
    await send(beat(vm.id, 10));
    await send(beat(vm.id, 20)); // buffered
    const res = await send(
      beat(vm.id, 30, { health: { healthy: false, reasons: ["GPU 0: XID 79"] } }),
    );
    expect(res.status).toBe(200);
    const now = await row(vm.id);
    expect(now).toMatchObject({ healthy: false, healthReasons: ["GPU 0: XID 79"] });
    expect(now.gpus[0]?.utilizationPct).toBe(30);
    const events: AuditEvent[] = await t.db
      .select()
      .from(auditEvents)
      .where(eq(auditEvents.targetId, vm.id));
    expect(events.map((e) => e.action)).toContain("vm.unhealthy");
    // The older buffered reading must not follow the newer one.
    await flushHeartbeatBuffers();
    expect((await row(vm.id)).gpus[0]?.utilizationPct).toBe(30);
  });

  it("writes in-use changes at once", async () => {
    const { vm, send } = await agentVm();
    await send(beat(vm.id, 10));
    await send(beat(vm.id, 10, { inUse: true }));
    expect((await row(vm.id)).inUse).toBe(true);
  });

  it("a buffered reading cannot undo a goodbye, even from another process's buffer", async () => {
    const { vm, send } = await agentVm();
    await send(beat(vm.id, 10));
    // Another web process holds an earlier, non-material heartbeat of this VM.
    const other = new HeartbeatBuffer(
      t.sql,
      { flushMs: 60_000, sampleIntervalS: 0 },
      SHUTTING_DOWN,
    );
    other.put(vm.id, "boot-1", [gpu(0, 55), gpu(1, 55)], new Date(Date.now() + 5_000));
    await send(beat(vm.id, 10, { shuttingDown: true }));
    await other.flush();
    await flushHeartbeatBuffers();
    const now = await row(vm.id);
    expect(now).toMatchObject({ healthy: false, healthReasons: [SHUTTING_DOWN] });
    expect(now.gpus[0]?.utilizationPct).toBe(10);
  });

  it("an older reading from another process never overwrites a newer one", async () => {
    const { vm, send } = await agentVm();
    await send(beat(vm.id, 40));
    const other = new HeartbeatBuffer(
      t.sql,
      { flushMs: 60_000, sampleIntervalS: 0 },
      SHUTTING_DOWN,
    );
    other.put(vm.id, "boot-1", [gpu(0, 99), gpu(1, 99)], new Date(Date.now() - 60_000));
    await other.flush();
    expect((await row(vm.id)).gpus[0]?.utilizationPct).toBe(40);
  });

  it("a revoked token stops heartbeats at once, buffered or not", async () => {
    const { vm, send } = await agentVm();
    await send(beat(vm.id, 10));
    expect((await send(beat(vm.id, 11))).status).toBe(200);
    await t.db.execute(sql`UPDATE agent_credentials SET revoked_at = now() WHERE vm_id = ${vm.id}`);
    expect((await send(beat(vm.id, 12))).status).toBe(401);
  });
});

describe("GPU samples", () => {
  it("takes at most one sample per VM per interval, also across processes", async () => {
    const { vm, send } = await agentVm();
    await send(beat(vm.id, 10));
    await send(beat(vm.id, 20));
    await send(beat(vm.id, 30));
    await flushHeartbeatBuffers();
    expect(await sampleCount(vm.id)).toBe(1);
    const [sample] = await t.db.execute<{ gpus: { index: number; utilizationPct: number }[] }>(
      sql`SELECT gpus FROM gpu_samples WHERE vm_id = ${vm.id}`,
    );
    expect(sample?.gpus).toEqual([
      expect.objectContaining({ index: 0, utilizationPct: 10, temperatureC: 50 }),
      expect.objectContaining({ index: 1, utilizationPct: 10 }),
    ]);
    // A second web process (its own memory of when it last sampled) is held back by the database.
    const other = new HeartbeatBuffer(
      t.sql,
      { flushMs: 60_000, sampleIntervalS: 60 },
      SHUTTING_DOWN,
    );
    other.sample(vm.id, [gpu(0, 80)], new Date());
    await other.flush();
    expect(await sampleCount(vm.id)).toBe(1);
    // Once the interval has passed, the next sample is taken.
    other.sample(vm.id, [gpu(0, 80)], new Date(Date.now() + 61_000));
    await other.flush();
    expect(await sampleCount(vm.id)).toBe(2);
  });

  it("takes no samples when the interval is 0", async () => {
    const [vm] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    const off = apiClient(t.db, { settings: { heartbeatFlushMs: 60_000, gpuSampleIntervalS: 0 } });
    const token = await makeAgent(t.db, vm);
    await off.mutate("agent.heartbeat", beat(vm.id, 10), { authorization: `Bearer ${token}` });
    await flushHeartbeatBuffers();
    expect(await sampleCount(vm.id)).toBe(0);
  });

  it("prunes samples older than the retention period (the periodic job)", async () => {
    const [vm] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    await t.db.execute(sql`
      INSERT INTO gpu_samples (vm_id, at, gpus)
      SELECT ${vm.id}, now() - make_interval(hours => h), '[]'::jsonb
      FROM unnest(ARRAY[1, 23, 25, 48]) AS h`);
    const job = pruneGpuSamplesJob({ staleSeconds: 60, drivers: {}, gpuSampleRetentionHours: 24 });
    const result = await job.handler({}, { db: t.db, log: logger, jobId: "test" });
    expect(result).toMatchObject({ deleted: expect.any(Number) });
    expect(await sampleCount(vm.id)).toBe(2);
    expect(await pruneGpuSamples(t.db, 2)).toBeGreaterThanOrEqual(1);
    expect(await sampleCount(vm.id)).toBe(1);
  });
});

describe("vm.gpuHistory", () => {
  let vm: Vm;
  beforeAll(async () => {
    [vm] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    // One sample a minute for 24 h: GPU 0 at 10 %, GPU 1 at 90 %; temperature peaks once.
    await t.db.execute(sql`
      INSERT INTO gpu_samples (vm_id, at, gpus)
      SELECT ${vm.id}, now() - make_interval(mins => m),
        jsonb_build_array(
          jsonb_build_object('index', 0, 'utilizationPct', 10, 'memoryUsedMiB', 1000,
            'memoryTotalMiB', 23028, 'temperatureC', CASE WHEN m = 30 THEN 95 ELSE 40 END, 'powerDrawW', 80),
          jsonb_build_object('index', 1, 'utilizationPct', 90, 'memoryUsedMiB', 20000,
            'memoryTotalMiB', 23028, 'temperatureC', 60, 'powerDrawW', 200))
      FROM generate_series(0, 24 * 60 - 1) AS m`);
  });

  it("downsamples 24 h of minute samples to at most 300 points per GPU", async () => {
    const res = await api.query("vm.gpuHistory", { vmId: vm.id, hours: 24 }, { userId: admin.id });
    expect(res.status).toBe(200);
    const h = res.data as {
      bucketSeconds: number;
      gpus: { index: number; points: { utilizationPct: number; temperatureC: number }[] }[];
    };
    expect(h.bucketSeconds).toBe((24 * 3600) / MAX_POINTS_PER_GPU);
    expect(h.gpus.map((g) => g.index)).toEqual([0, 1]);
    for (const g of h.gpus) {
      expect(g.points.length).toBeLessThanOrEqual(MAX_POINTS_PER_GPU + 1);
      expect(g.points.length).toBeGreaterThan(250);
    }
    expect(new Set(h.gpus[0]?.points.map((p) => p.utilizationPct))).toEqual(new Set([10]));
    expect(new Set(h.gpus[1]?.points.map((p) => p.utilizationPct))).toEqual(new Set([90]));
    // The spike survives downsampling (temperature is the bucket's maximum).
    expect(Math.max(...(h.gpus[0]?.points.map((p) => p.temperatureC) ?? []))).toBe(95);
  });

  it("covers only the range asked for", async () => {
    const res = await api.query("vm.gpuHistory", { vmId: vm.id, hours: 1 }, { userId: admin.id });
    const h = res.data as { gpus: { points: unknown[] }[] };
    expect(h.gpus[0]?.points.length).toBeGreaterThanOrEqual(59);
    expect(h.gpus[0]?.points.length).toBeLessThanOrEqual(61);
  });

  it("is for admins only, and refuses bad input with 400 and unknown VMs with 404", async () => {
    const input = { vmId: vm.id, hours: 6 };
    expect((await api.query("vm.gpuHistory", input)).status).toBe(401);
    expect((await api.query("vm.gpuHistory", input, { userId: researcher.id })).status).toBe(403);
    for (const hours of [0, 25, 1.5]) {
      const bad = await api.query("vm.gpuHistory", { vmId: vm.id, hours }, { userId: admin.id });
      expect(bad.status).toBe(400);
    }
    const unknown = await api.query(
      "vm.gpuHistory",
      { vmId: "00000000-0000-4000-8000-000000000000", hours: 1 },
      { userId: admin.id },
    );
    expect(unknown.status).toBe(404);
  });

  it("answers an empty history for a VM without samples", async () => {
    const [empty] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    const res = await api.query(
      "vm.gpuHistory",
      { vmId: empty.id, hours: 1 },
      { userId: admin.id },
    );
    expect(res.status).toBe(200);
    expect(res.data).toMatchObject({ vmId: empty.id, gpus: [] });
  });
});
