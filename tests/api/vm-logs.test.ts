import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Vm, vmLogs, vms } from "../../server/db/schema";
import { listLogs, pruneLogs, recordLogs, VM_LOG_PRUNE_EVERY } from "../../server/domain/vm-logs";
import { LOG_BATCH_MAX, LOG_LINE_MAX } from "../../server/protocol/agent";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeAgent, makeFleet, makeUser, makeVms } from "../fixtures";
import { apiClient, tableCounts } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let vmA: Vm;
let vmB: Vm;
let tokenA: string;
let adminId: string;
let researcherId: string;

const line = (message: string, source = "agent", level = "info") => ({
  at: "2026-11-27T07:00:00.000Z",
  source,
  level,
  message,
});
const batch = (vmId: string, lines: unknown[], extra: Record<string, unknown> = {}) => ({
  vmId,
  bootId: "boot-1",
  lines,
  ...extra,
});
const asA = () => ({ authorization: `Bearer ${tokenA}` });

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  const fleet = await makeFleet(t.db, { gpuCount: 0 });
  [vmA, vmB] = (await makeVms(t.db, fleet, 2, "ready")) as [Vm, Vm];
  tokenA = await makeAgent(t.db, vmA);
  adminId = (await makeUser(t.db, "admin")).id;
  researcherId = (await makeUser(t.db, "researcher")).id;
});
afterAll(() => t.drop());

const rowsOf = (vmId: string) => t.db.select().from(vmLogs).where(eq(vmLogs.vmId, vmId));

describe("agent.logs", () => {
  it("stores a VM's lines with their source, level and time", async () => {
    const res = await api.mutate(
      "agent.logs",
      batch(vmA.id, [line("registered"), line("Cloud-init v. 24.4 finished", "cloud-init")]),
      asA(),
    );
    expect(res.status).toBe(200);
    expect(res.data).toEqual({ accepted: 2 });
    const rows = await rowsOf(vmA.id);
    expect(rows.map((r) => [r.source, r.level, r.message, r.bootId])).toEqual([
      ["agent", "info", "registered", "boot-1"],
      ["cloud-init", "info", "Cloud-init v. 24.4 finished", "boot-1"],
    ]);
    expect(rows[0]?.at.toISOString()).toBe("2026-11-27T07:00:00.000Z");
  });

  it("a token for VM A cannot write VM B's logs (403, nothing written)", async () => {
    const before = await tableCounts(t.db);
    const res = await api.mutate("agent.logs", batch(vmB.id, [line("forged")]), asA());
    expect(res.status).toBe(403);
    expect(await tableCounts(t.db)).toEqual(before);
    expect(await rowsOf(vmB.id)).toEqual([]);
  });

  it("no token, or an admin session instead of a token: 401", async () => {
    expect((await api.mutate("agent.logs", batch(vmA.id, [line("x")]))).status).toBe(401);
    const res = await api.mutate("agent.logs", batch(vmA.id, [line("x")]), { userId: adminId });
    expect(res.status).toBe(401);
  });

  it("refuses bad input with 400 and writes nothing", async () => {
    const before = await tableCounts(t.db);
    const bad = [
      batch(vmA.id, []),
      batch(
        vmA.id,
        Array.from({ length: LOG_BATCH_MAX + 1 }, () => line("x")),
      ),
      batch(vmA.id, [line("x".repeat(LOG_LINE_MAX + 1))]),
      batch(vmA.id, [line("x", "kernel")]),
      batch(vmA.id, [line("x", "agent", "trace")]),
      batch(vmA.id, [{ ...line("x"), at: "yesterday" }]),
      batch(vmA.id, [{ ...line("x"), extra: 1 }]),
      batch(vmA.id, [line("x")], { dropped: -1 }),
      { vmId: vmA.id, lines: [line("x")] },
      "not an object",
    ];
    for (const input of bad) {
      const res = await api.mutate("agent.logs", input, asA());
      expect(res.status, JSON.stringify(input).slice(0, 80)).toBe(400);
      expect(res.error?.data?.code).toBe("BAD_REQUEST");
    }
    expect(await tableCounts(t.db)).toEqual(before);
  });

  it("reports the agent's dropped lines as a warning line; NUL bytes do not fail a batch", async () => {
    const res = await api.mutate(
      "agent.logs",
      batch(vmA.id, [line("binary\u0000junk", "container")], { dropped: 42 }),
      asA(),
    );
    expect(res.status).toBe(200);
    const rows = await rowsOf(vmA.id);
    expect(rows.some((r) => r.message === "binary\uFFFDjunk")).toBe(true);
    expect(rows.at(-1)).toMatchObject({ source: "agent", level: "warn" });
    expect(rows.at(-1)?.message).toContain("dropped 42 log line(s)");
  });
});

describe("bounded per VM", () => {
  it("keeps only the newest lines of a VM and leaves other VMs alone", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const [v1, v2] = (await makeVms(t.db, fleet, 2, "ready")) as [Vm, Vm];
    await recordLogs(t.db, batch(v2.id, [line("other vm")]) as never, { keep: 10, pruneEvery: 1 });
    for (let i = 0; i < 5; i++) {
      const lines = Array.from({ length: 7 }, (_, j) => line(`b${i}-${j}`));
      await recordLogs(t.db, batch(v1.id, lines) as never, { keep: 10, pruneEvery: 1 });
    }
    const rows = (await rowsOf(v1.id)).sort((a, b) => a.id - b.id);
    expect(rows).toHaveLength(10);
    expect(rows.at(-1)?.message).toBe("b4-6");
    expect(rows[0]?.message).toBe("b3-4");
    expect(await rowsOf(v2.id)).toHaveLength(1);
  });

  it("prunes now and then by default, so a VM stays near the bound", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const [v] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    for (let i = 0; i < 60; i++) {
      const lines = Array.from({ length: 50 }, (_, j) => line(`${i}-${j}`));
      await recordLogs(t.db, batch(v.id, lines) as never, { keep: 300 });
    }
    const count = (await rowsOf(v.id)).length;
    // 3,000 lines shipped; a prune at least every VM_LOG_PRUNE_EVERY ids keeps it near the bound.
    expect(count).toBeGreaterThanOrEqual(300);
    expect(count).toBeLessThanOrEqual(300 + VM_LOG_PRUNE_EVERY + 50);
    expect(await pruneLogs(t.db, v.id, 300)).toBe(count - 300);
  });
});

describe("vm.logs (admin live tail)", () => {
  it("returns the newest lines oldest first, then only newer ones after the cursor", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const [v] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    await recordLogs(
      t.db,
      batch(v.id, [
        line("a1"),
        line("c1", "cloud-init"),
        line("a2"),
        line("k1", "container"),
      ]) as never,
    );
    const first = await api.query("vm.logs", { vmId: v.id, limit: 3 }, { userId: adminId });
    expect(first.status).toBe(200);
    const page = first.data as { lines: { id: number; message: string }[]; cursor: number };
    expect(page.lines.map((l) => l.message)).toEqual(["c1", "a2", "k1"]);
    expect(page.cursor).toBe(page.lines.at(-1)?.id);

    const empty = await api.query(
      "vm.logs",
      { vmId: v.id, afterId: page.cursor },
      { userId: adminId },
    );
    expect(empty.data).toEqual({ lines: [], cursor: page.cursor });

    await recordLogs(t.db, batch(v.id, [line("a3"), line("c2", "cloud-init")]) as never);
    const next = await listLogs(t.db, { vmId: v.id, afterId: page.cursor, limit: 100 });
    expect(next.lines.map((l) => l.message)).toEqual(["a3", "c2"]);
    const onlyAgent = await listLogs(t.db, { vmId: v.id, afterId: 0, source: "agent", limit: 100 });
    expect(onlyAgent.lines.map((l) => l.message)).toEqual(["a1", "a2", "a3"]);
  });

  it("is for admins only; an unknown VM is 404; bad input is 400", async () => {
    expect((await api.query("vm.logs", { vmId: vmA.id }, { userId: researcherId })).status).toBe(
      403,
    );
    expect((await api.query("vm.logs", { vmId: vmA.id })).status).toBe(401);
    const missing = await api.query(
      "vm.logs",
      { vmId: "00000000-0000-4000-8000-00000000beef" },
      { userId: adminId },
    );
    expect(missing.status).toBe(404);
    for (const input of [
      { vmId: "nope" },
      { vmId: vmA.id, limit: 0 },
      { vmId: vmA.id, limit: 5000 },
      { vmId: vmA.id, afterId: -1 },
      { vmId: vmA.id, source: "kernel" },
      { vmId: vmA.id, extra: true },
    ]) {
      const res = await api.query("vm.logs", input, { userId: adminId });
      expect(res.status, JSON.stringify(input)).toBe(400);
    }
  });
});

describe("boot timings", () => {
  const register = (vmId: string, bootId: string, bootTimings?: unknown) => ({
    vmId,
    bootId,
    hostname: "h",
    agentVersion: "0.1.0",
    protocolVersion: 2,
    gpus: [],
    health: { healthy: true, reasons: [] },
    ...(bootTimings ? { bootTimings } : {}),
  });
  const timings = {
    bootedAt: "2026-11-27T07:00:00.000Z",
    cloudInitFinishedAt: null,
    cloudInitStatus: "running",
    containerReadyAt: null,
    agentStartedAt: "2026-11-27T07:00:20.000Z",
  };
  const stored = async () =>
    (await t.db.select({ b: vms.bootTimings }).from(vms).where(eq(vms.id, vmA.id)))[0]?.b;

  it("register stores them with registeredAt; a heartbeat adds later milestones; a new boot starts over", async () => {
    expect(
      (await api.mutate("agent.register", register(vmA.id, "boot-1", timings), asA())).status,
    ).toBe(200);
    const first = await stored();
    expect(first).toMatchObject({ ...timings, bootId: "boot-1" });
    expect(Date.parse(first?.registeredAt ?? "")).toBeGreaterThan(Date.now() - 60_000);

    const done = {
      ...timings,
      cloudInitFinishedAt: "2026-11-27T07:01:00.000Z",
      cloudInitStatus: "done",
      containerReadyAt: "2026-11-27T07:01:30.000Z",
    };
    const hb = await api.mutate(
      "agent.heartbeat",
      {
        vmId: vmA.id,
        bootId: "boot-1",
        gpus: [],
        health: { healthy: true, reasons: [] },
        inUse: false,
        idleSince: null,
        bootTimings: done,
      },
      asA(),
    );
    expect(hb.status).toBe(200);
    expect(await stored()).toEqual({
      ...done,
      bootId: "boot-1",
      registeredAt: first?.registeredAt,
    });

    await api.mutate("agent.register", register(vmA.id, "boot-2"), asA());
    const fresh = await stored();
    expect(fresh?.bootId).toBe("boot-2");
    expect(fresh?.cloudInitFinishedAt).toBeUndefined();
    expect(fresh?.registeredAt).toBeTruthy();
  });

  it("refuses malformed timings with 400", async () => {
    for (const bad of [
      { ...timings, cloudInitStatus: "maybe" },
      { ...timings, bootedAt: "07:00" },
      { ...timings, extra: 1 },
    ]) {
      const res = await api.mutate("agent.register", register(vmA.id, "boot-2", bad), asA());
      expect(res.status).toBe(400);
    }
  });
});
