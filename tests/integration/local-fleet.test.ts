import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalFleetDriver } from "../../server/cloud/local/driver";
import { type Fleet, vmLogs, vms } from "../../server/db/schema";
import { claimVm, releaseVm } from "../../server/domain/allocation";
import { fleetLedger } from "../../server/domain/convergence";
import { ensureFleet } from "../../server/domain/fleets";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeUser } from "../fixtures";
import { startApiServer } from "../http";

// A heartbeat interval far longer than the waits below: assignment and wipe must arrive by the
// long-poll push, not by waiting for the next heartbeat.
const HEARTBEAT_S = 60;

let t: TestDatabase;
let api: Awaited<ReturnType<typeof startApiServer>>;
let driver: LocalFleetDriver;
let fleet: Fleet;
const stateDir = mkdtempSync(path.join(os.tmpdir(), "lablink-local-fleet-"));

async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const fleetVms = () => t.db.select().from(vms).where(eq(vms.fleetId, fleet.id));

beforeAll(async () => {
  t = await createTestDatabase();
  api = await startApiServer(t.db, t.sql, HEARTBEAT_S);
  driver = new LocalFleetDriver({
    ledger: fleetLedger(t.db),
    serverUrl: api.url,
    rootDir: path.resolve(import.meta.dirname, "../.."),
    stateDir,
    heartbeatIntervalS: HEARTBEAT_S,
    log: logger,
  });
  fleet = await ensureFleet(t.db, {
    name: "local",
    driver: "local",
    instanceType: "local.sim",
    gpuModel: "NVIDIA A10G (simulated)",
    gpuCount: 1,
    desiredSize: 4,
    status: "active",
  });
});

afterAll(async () => {
  await driver?.close();
  await api?.close();
  await t?.drop();
});

describe("the local fleet", () => {
  it("starts 4 agent processes that register and become ready within 30 s", async () => {
    const started = Date.now();
    await driver.apply(fleet);
    expect(driver.runningCount()).toBe(4);
    const ready = await waitFor(
      "4 ready VMs",
      async () => {
        const rows = await fleetVms();
        return rows.filter((v) => v.state === "ready" && v.healthy).length === 4 && rows;
      },
      30_000,
    );
    expect(Date.now() - started).toBeLessThan(30_000);
    for (const vm of ready) {
      expect(vm.gpus).toHaveLength(1);
      expect(vm.gpus[0]).toMatchObject({ name: "NVIDIA A10G (simulated)", healthy: true });
      expect(vm.agentVersion).toBeTruthy();
      expect(vm.lastHeartbeatAt).toBeInstanceOf(Date);
    }
  });

  it("delivers a claim to the agent and returns a released VM to ready after the wipe", async () => {
    const researcher = await makeUser(t.db, "researcher", "grace");
    const { vm } = await claimVm(t.db, {
      userId: researcher.id,
      fleetId: fleet.id,
      actor: { kind: "user", id: researcher.id },
    });
    // The agent confirms it set the VM up for this assignment.
    await waitFor(
      "assignment acknowledged by the agent",
      async () => {
        const [row] = await t.db.select().from(vms).where(eq(vms.id, vm.id));
        return row?.assignmentAckedId === vm.assignmentId;
      },
      15_000,
    );
    const vmDir = path.join(stateDir, vm.name);
    expect(readdirSync(vmDir).join(" ")).toMatch(/assign|home|user/i);

    await releaseVm(t.db, { userId: researcher.id, actor: { kind: "user", id: researcher.id } });
    const back = await waitFor(
      "VM back in the pool",
      async () => {
        const [row] = await t.db.select().from(vms).where(eq(vms.id, vm.id));
        return row?.state === "ready" && row;
      },
      15_000,
    );
    expect(back).toMatchObject({ holderId: null, assignmentId: null });

    // Reassignment works more than once (the original's agent stopped listening after one).
    const second = await makeUser(t.db, "researcher", "hopper");
    const again = await claimVm(t.db, {
      userId: second.id,
      fleetId: fleet.id,
      actor: { kind: "user", id: second.id },
    });
    await waitFor(
      "second assignment acknowledged",
      async () => {
        const [row] = await t.db.select().from(vms).where(eq(vms.id, again.vm.id));
        return row?.assignmentAckedId === again.vm.assignmentId;
      },
      15_000,
    );
  });

  it("simulated VMs report boot timings and ship cloud-init, container and agent lines", async () => {
    const rows = await fleetVms();
    const vm = rows.find((v) => v.state !== "terminated");
    if (!vm) throw new Error("no VM");
    // Registration carries the timings known by then; later milestones come with the next
    // heartbeat (60 s here; tests/integration/agent-logs.test.ts follows a whole boot).
    const [row] = await t.db.select().from(vms).where(eq(vms.id, vm.id));
    const timings = row?.bootTimings;
    expect(timings?.bootId).toBe(row?.bootId);
    expect(Date.parse(timings?.agentStartedAt ?? "")).toBeGreaterThan(
      Date.parse(timings?.bootedAt ?? ""),
    );
    expect(timings?.registeredAt).toBeTruthy();
    const sources = await waitFor(
      "lines from all three sources",
      async () => {
        const lines = await t.db.select().from(vmLogs).where(eq(vmLogs.vmId, vm.id));
        const seen = new Set(lines.map((l) => l.source));
        return seen.size === 3 && [...seen].sort();
      },
      20_000,
    );
    expect(sources).toEqual(["agent", "cloud-init", "container"]);
  });

  it("never writes an agent token into the agents' logs", async () => {
    const logs = readdirSync(stateDir).map((d) =>
      readFileSync(path.join(stateDir, d, "agent.log"), "utf8"),
    );
    expect(logs.join("")).not.toMatch(/lla_[0-9a-f]{32}_/);
    expect(logs.join("")).toMatch(/registered/);
  });

  it("stops every agent process on close", async () => {
    await driver.close();
    expect(driver.runningCount()).toBe(0);
  });
});
