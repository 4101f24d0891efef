import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { and, asc, eq, inArray, like } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalFleetDriver } from "../../server/cloud/local/driver";
import {
  auditEvents,
  type Fleet,
  fleets,
  operations,
  type Vm,
  vms,
  webhookDeliveries,
} from "../../server/db/schema";
import { claimVm, myVm } from "../../server/domain/allocation";
import { fleetLedger } from "../../server/domain/convergence";
import { ensureFleet } from "../../server/domain/fleets";
import { runRecovery } from "../../server/domain/recovery";
import { systemActor } from "../../server/domain/vm-state";
import { createWebhook, WEBHOOK_EVENT_TYPES } from "../../server/domain/webhooks";
import { executeOperation } from "../../server/jobs/operations";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeUser } from "../fixtures";
import { startApiServer } from "../http";

/*
 * Automatic recovery with REAL agent processes on the local fleet: runRecovery decides, the
 * operations it queues run through the local driver (as the worker runs them), and the agents
 * carry out warm reboots (exit 75, restarted as a new boot). Time thresholds are crossed with
 * runRecovery's `now`, not by waiting; each fleet's policy keeps the other fleets' VMs out of it.
 */

const HEARTBEAT_S = 1;
let t: TestDatabase;
let api: Awaited<ReturnType<typeof startApiServer>>;
let driver: LocalFleetDriver;
const stateDir = mkdtempSync(path.join(os.tmpdir(), "lablink-recovery-"));

async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false | null>,
  timeoutMs = 30_000,
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

const row = async (id: string) => (await t.db.select().from(vms).where(eq(vms.id, id)))[0] as Vm;
const liveOf = async (fleet: Fleet) =>
  (await t.db.select().from(vms).where(eq(vms.fleetId, fleet.id))).filter(
    (v) => v.state !== "terminated",
  );
const later = (min: number) => new Date(Date.now() + min * 60_000);

/** Runs recovery and returns what it did to this fleet's VMs. */
async function recover(fleet: Fleet, now = new Date()) {
  const r = await runRecovery(t.db, { now });
  if (r.skipped) throw new Error("skipped");
  const ids = new Set(
    (await t.db.select({ id: vms.id }).from(vms).where(eq(vms.fleetId, fleet.id))).map((v) => v.id),
  );
  return r.outcomes.filter((o) => ids.has(o.vmId));
}

/** Runs the operation recovery queued, as the worker would. */
async function runQueued(fleet: Fleet) {
  const [op] = await t.db
    .select()
    .from(operations)
    .where(and(eq(operations.fleetId, fleet.id), eq(operations.status, "queued")));
  if (!op) throw new Error("no queued operation");
  expect(
    await executeOperation({ db: t.db, drivers: { local: driver }, log: logger }, op.id),
  ).toEqual({ status: "succeeded" });
  return op;
}

const recoveryHistory = async (vmIds: string[]) =>
  (
    await t.db
      .select({ action: auditEvents.action, targetId: auditEvents.targetId })
      .from(auditEvents)
      .where(and(inArray(auditEvents.targetId, vmIds), like(auditEvents.action, "recovery.%")))
      .orderBy(asc(auditEvents.id))
  ).map((e) => e.action);

async function fleetOf(name: string, recoveryPolicy: Record<string, unknown>): Promise<Fleet> {
  const fleet = await ensureFleet(t.db, {
    name,
    driver: "local",
    instanceType: "local.sim",
    gpuModel: "NVIDIA A10G (simulated)",
    gpuCount: 1,
    desiredSize: 1,
    status: "active",
  });
  await t.db.update(fleets).set({ recoveryPolicy }).where(eq(fleets.id, fleet.id));
  await driver.apply(fleet);
  const [vm] = await waitFor("the VM ready", async () => {
    const rows = await liveOf(fleet);
    return rows.length === 1 && rows[0]?.state === "ready" && rows[0].healthy && rows;
  });
  if (!vm) throw new Error("no VM");
  return { ...fleet, recoveryPolicy };
}

// Act at once (no grace, no cooldown); silence only when a test moves the clock an hour on.
const quick = { unhealthyGraceMinutes: 0, cooldownMinutes: 0, silentMinutes: 60 };

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
  await createWebhook(t.db, {
    url: "https://hooks.example.edu/lablink",
    events: [...WEBHOOK_EVENT_TYPES],
    format: "lablink",
    userId: null,
    actor: systemActor,
  });
});

afterAll(async () => {
  await driver?.close();
  await api?.close();
  await t?.drop();
});

describe("automatic recovery with real agents", () => {
  it("a silent agent (SIGSTOP) gets a cold reboot and is back in service", async () => {
    const fleet = await fleetOf("rec-silent", { ...quick, silentMinutes: 1 });
    const [vm] = await liveOf(fleet);
    if (!vm?.providerId) throw new Error("no VM");
    const pid = Number(vm.providerId.replace("local:", ""));
    process.kill(pid, "SIGSTOP");
    try {
      // Two minutes on: the agent has been silent for more than the policy's minute.
      expect(await recover(fleet, later(2))).toMatchObject([
        { problem: "silent", decision: "act", step: "cold_reboot" },
      ]);
      const op = await runQueued(fleet);
      expect(op).toMatchObject({ kind: "vm.reboot", params: { cold: true, recovery: true } });
    } finally {
      try {
        process.kill(pid, "SIGCONT");
      } catch {
        // Killed by the cold reboot, as it should be.
      }
    }
    const back = await waitFor("the VM back in the pool", async () => {
      const r = await row(vm.id);
      return r.state === "ready" && r.healthy && r.providerId !== vm.providerId && r;
    });
    expect(back.bootId).not.toBe(vm.bootId);
    expect(await recover(fleet)).toMatchObject([{ decision: "recovered" }]);
    expect(await recoveryHistory([vm.id])).toEqual([
      "recovery.detected",
      "recovery.cold_reboot",
      "recovery.recovered",
    ]);
  });

  it("an unhealthy GPU gets a warm reboot by its own agent, which cures it", async () => {
    const fleet = await fleetOf("rec-warm", quick);
    const [vm] = await liveOf(fleet);
    if (!vm) throw new Error("no VM");
    writeFileSync(path.join(stateDir, vm.name, "gpu-fault"), "GPU 0 has fallen off the bus\n");
    await waitFor("the VM unhealthy", async () => !(await row(vm.id)).healthy);
    expect(await recover(fleet)).toMatchObject([
      { problem: "unhealthy", decision: "act", step: "warm_reboot" },
    ]);
    // The agent took the command and rebooted itself: a new process, a new boot, healthy.
    const back = await waitFor("the VM back, healthy", async () => {
      const r = await row(vm.id);
      return r.state === "ready" && r.healthy && r.bootId !== vm.bootId && r;
    });
    expect(back.providerId).not.toBe(vm.providerId);
    expect(
      await t.db.select().from(operations).where(eq(operations.fleetId, fleet.id)),
    ).toHaveLength(0);
    expect(await recover(fleet)).toMatchObject([{ decision: "recovered" }]);
    expect(await recoveryHistory([vm.id])).toEqual([
      "recovery.detected",
      "recovery.warm_reboot",
      "recovery.recovered",
    ]);
  });

  it("a VM that never recovers: warm, cold, replace, then failed, with the history in the audit log", async () => {
    const fleet = await fleetOf("rec-never", {
      ...quick,
      maxWarmReboots: 1,
      maxColdReboots: 1,
      maxReplacements: 1,
    });
    const [vm] = await liveOf(fleet);
    if (!vm) throw new Error("no VM");
    writeFileSync(path.join(stateDir, vm.name, "gpu-fault.persistent"), "GPU 0: XID 79\n");
    const unhealthyAgain = (id: string, boot: string | null) =>
      waitFor("the VM back, still unhealthy", async () => {
        const r = await row(id);
        return r.state === "ready" && !r.healthy && r.bootId !== boot && r;
      });
    await waitFor("the VM unhealthy", async () => !(await row(vm.id)).healthy);

    expect(await recover(fleet)).toMatchObject([{ decision: "act", step: "warm_reboot" }]);
    const afterWarm = await unhealthyAgain(vm.id, vm.bootId);

    expect(await recover(fleet)).toMatchObject([{ decision: "act", step: "cold_reboot" }]);
    await runQueued(fleet);
    await unhealthyAgain(vm.id, afterWarm.bootId);

    expect(await recover(fleet)).toMatchObject([{ decision: "act", step: "replace" }]);
    await runQueued(fleet);
    expect((await row(vm.id)).state).toBe("terminated");
    // Its replacement (same name, same simulated hardware fault) comes up unhealthy too.
    const replacement = await waitFor("the replacement up", async () => {
      const [r] = await liveOf(fleet);
      return r && r.id !== vm.id && r.state === "ready" && !r.healthy && r;
    });

    expect(await recover(fleet)).toMatchObject([{ vmId: replacement.id, decision: "give_up" }]);
    const failed = await row(replacement.id);
    expect(failed.state).toBe("failed");
    expect(failed.healthReasons[0]).toMatch(/automatic recovery gave up after 3 attempt/);
    expect(await recoveryHistory([vm.id, replacement.id])).toEqual([
      "recovery.detected",
      "recovery.warm_reboot",
      "recovery.cold_reboot",
      "recovery.replace",
      "recovery.detected",
      "recovery.gave_up",
    ]);
    const gaveUp = await t.db
      .select()
      .from(webhookDeliveries)
      .where(eq(webhookDeliveries.event, "recovery.gave_up"));
    expect(gaveUp.map((d) => (d.payload as { data: { vmId: string } }).data.vmId)).toContain(
      replacement.id,
    );
  });

  it("a held VM: its holder is told before the reboot, and gets the VM back afterwards", async () => {
    const fleet = await fleetOf("rec-held", { ...quick, holderNoticeMinutes: 5 });
    const me = await makeUser(t.db);
    const { vm } = await claimVm(t.db, {
      userId: me.id,
      fleetId: fleet.id,
      actor: { kind: "user", id: me.id },
    });
    await waitFor("the assignment set up", async () => {
      const r = await row(vm.id);
      return r.assignmentAckedId === vm.assignmentId;
    });
    const before = await row(vm.id);
    writeFileSync(path.join(stateDir, vm.name, "gpu-fault"), "GPU 0: thermal shutdown\n");
    await waitFor("the VM unhealthy", async () => !(await row(vm.id)).healthy);

    expect(await recover(fleet)).toMatchObject([{ decision: "notify" }]);
    expect((await row(vm.id)).state).toBe("claimed");
    expect((await myVm(t.db, me.id))?.recoveryNotice).not.toBeNull();
    // Within the notice period nothing happens to the VM.
    expect(await recover(fleet, later(4))).toMatchObject([{ decision: "wait" }]);
    expect((await row(vm.id)).bootId).toBe(before.bootId);

    expect(await recover(fleet, later(6))).toMatchObject([
      { decision: "act", step: "warm_reboot" },
    ]);
    const back = await waitFor("the VM back with its holder, set up again", async () => {
      const r = await row(vm.id);
      return (
        r.state === "claimed" &&
        r.healthy &&
        r.bootId !== before.bootId &&
        r.assignmentAckedId === vm.assignmentId &&
        r
      );
    });
    expect(back.holderId).toBe(me.id);
    expect(await recover(fleet)).toMatchObject([{ decision: "recovered" }]);
    expect(await recoveryHistory([vm.id])).toEqual([
      "recovery.detected",
      "recovery.holder_notified",
      "recovery.warm_reboot",
      "recovery.recovered",
    ]);
  });
});
