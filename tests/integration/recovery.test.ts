import { and, asc, eq, like, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  auditEvents,
  type Fleet,
  operations,
  vmRecoveries,
  vms,
  webhookDeliveries,
} from "../../server/db/schema";
import { commandsFor } from "../../server/domain/agents";
import { claimVm, myVm } from "../../server/domain/allocation";
import { runRecovery } from "../../server/domain/recovery";
import { vmDetail } from "../../server/domain/vm-admin";
import { systemActor } from "../../server/domain/vm-state";
import { createWebhook, WEBHOOK_EVENT_TYPES } from "../../server/domain/webhooks";
import type { Mailer } from "../../server/mail";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";

/*
 * runRecovery against real Postgres with a virtual clock: what it decides and writes (VM states,
 * operations, audit rows, webhook events, the holder's notice). The operations it queues are run
 * by the worker through the fleet's driver (tests/integration/recovery-agents.test.ts runs real
 * agents through the whole loop).
 */

let t: TestDatabase;
const mails: { to: string; subject: string; text: string }[] = [];
const mailer: Mailer = {
  async sendMail(m) {
    mails.push(m as (typeof mails)[number]);
    return {};
  },
};
const mail = { mailer, from: "lablink@example.edu", publicUrl: "https://lablink.example.edu" };

beforeAll(async () => {
  t = await createTestDatabase();
  await createWebhook(t.db, {
    url: "https://hooks.example.edu/lablink",
    events: [...WEBHOOK_EVENT_TYPES],
    format: "lablink",
    userId: null,
    actor: systemActor,
  });
});
afterAll(() => t?.drop());

const T0 = new Date("2030-01-01T10:00:00Z");
const at = (min: number) => new Date(T0.getTime() + min * 60_000);

/** Only this fleet's outcomes (each test has its own fleet; runRecovery looks at all). */
async function run(fleet: Fleet, now: Date) {
  const r = await runRecovery(t.db, { now, mail });
  if (r.skipped) throw new Error("skipped");
  const mine = new Set(
    (await t.db.select({ id: vms.id }).from(vms).where(eq(vms.fleetId, fleet.id))).map((v) => v.id),
  );
  return r.outcomes.filter((o) => mine.has(o.vmId));
}

const row = async (id: string) => (await t.db.select().from(vms).where(eq(vms.id, id)))[0];
const history = async (vmId: string) =>
  (
    await t.db
      .select({ action: auditEvents.action, details: auditEvents.details })
      .from(auditEvents)
      .where(and(eq(auditEvents.targetId, vmId), like(auditEvents.action, "recovery.%")))
      .orderBy(asc(auditEvents.id))
  ).map((e) => e.action);
const events = async (type: string, vmId: string) =>
  (await t.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.event, type))).filter(
    (d) => (d.payload as { data: { vmId: string } }).data.vmId === vmId,
  );

/** A fleet with the default policy, and VMs whose agents last spoke at T0. */
async function fleetWith(policy: Record<string, unknown> = {}) {
  return makeFleet(t.db, { recoveryPolicy: policy });
}

describe("runRecovery", () => {
  it("an unhealthy VM: grace, then a warm reboot the agent is told about, then a cold reboot through an operation", async () => {
    const fleet = await fleetWith();
    const [vm] = await makeVms(t.db, fleet, 1, "ready", {
      healthy: false,
      healthReasons: ["GPU 0: uncorrectable ECC errors: 3"],
      lastHeartbeatAt: T0,
      agentProtocolVersion: 3,
      stateChangedAt: at(-60),
    });
    if (!vm) throw new Error("fixture");
    expect((await run(fleet, T0)).map((o) => o.decision)).toEqual(["wait"]);
    await t.db
      .update(vms)
      .set({ lastHeartbeatAt: at(2) })
      .where(eq(vms.id, vm.id));
    expect(await run(fleet, at(2))).toMatchObject([{ decision: "act", step: "warm_reboot" }]);
    const rebooting = await row(vm.id);
    expect(rebooting?.state).toBe("rebooting");
    expect(await commandsFor(t.db, rebooting as NonNullable<typeof rebooting>)).toEqual([
      { type: "reboot", bootId: "boot-1", reason: "automatic recovery: warm reboot" },
    ]);

    // It came back (a new boot) and is still unhealthy; after the cooldown: a cold reboot.
    await t.db
      .update(vms)
      .set({ state: "ready", lastHeartbeatAt: at(6), bootId: "boot-2" })
      .where(eq(vms.id, vm.id));
    expect(await run(fleet, at(6))).toMatchObject([{ decision: "wait" }]);
    expect(await run(fleet, at(7))).toMatchObject([{ decision: "act", step: "cold_reboot" }]);
    const [op] = await t.db.select().from(operations).where(eq(operations.vmId, vm.id));
    expect(op).toMatchObject({ kind: "vm.reboot", status: "queued", params: { cold: true } });
    const [rec] = await t.db.select().from(vmRecoveries).where(eq(vmRecoveries.vmId, vm.id));
    expect(rec).toMatchObject({ step: "cold_reboot", stepAttempts: 1, totalAttempts: 2 });
    // The admin's VM page shows the episode and, in its history, every step.
    const detail = await vmDetail(t.db, vm.id);
    expect(detail.recovery).toMatchObject({
      problem: "unhealthy",
      step: "cold_reboot",
      stepAttempts: 1,
      totalAttempts: 2,
    });
    expect(detail.history.map((h) => h.action)).toContain("recovery.warm_reboot");
    expect(await history(vm.id)).toEqual([
      "recovery.detected",
      "recovery.warm_reboot",
      "recovery.cold_reboot",
    ]);
  });

  it("a silent VM gets no warm reboot: straight to a cold reboot", async () => {
    const fleet = await fleetWith();
    const [vm] = await makeVms(t.db, fleet, 1, "ready", {
      lastHeartbeatAt: at(-4),
      agentProtocolVersion: 3,
    });
    if (!vm) throw new Error("fixture");
    expect(await run(fleet, T0)).toMatchObject([
      { problem: "silent", decision: "act", step: "cold_reboot" },
    ]);
    expect((await row(vm.id))?.state).toBe("ready");
  });

  it("waits while another operation is in flight on the fleet", async () => {
    const fleet = await fleetWith();
    const [vm] = await makeVms(t.db, fleet, 1, "booting", { stateChangedAt: at(-30) });
    if (!vm) throw new Error("fixture");
    await t.db
      .insert(operations)
      .values({ fleetId: fleet.id, kind: "fleet.scale", params: { size: 2 } });
    expect(await run(fleet, T0)).toMatchObject([
      { problem: "stuck_booting", decision: "busy", step: "cold_reboot" },
    ]);
    expect(await t.db.select().from(operations).where(eq(operations.vmId, vm.id))).toHaveLength(0);
  });

  it("a held VM: the holder is told (portal, email, webhook) before the reboot, and the VM stays theirs", async () => {
    const fleet = await fleetWith({ holderNoticeMinutes: 5 });
    await makeVms(t.db, fleet, 1, "ready", { agentProtocolVersion: 3, lastHeartbeatAt: T0 });
    const me = await makeUser(t.db);
    const { vm } = await claimVm(t.db, {
      userId: me.id,
      fleetId: fleet.id,
      actor: { kind: "user", id: me.id },
    });
    await t.db
      .update(vms)
      .set({ healthy: false, healthReasons: ["GPU 0 fell off the bus"], lastHeartbeatAt: at(3) })
      .where(eq(vms.id, vm.id));
    await run(fleet, at(1)); // detected; unhealthy grace
    mails.length = 0;
    expect(await run(fleet, at(3))).toMatchObject([{ decision: "notify" }]);
    expect((await row(vm.id))?.state).toBe("claimed");
    expect((await myVm(t.db, me.id))?.recoveryNotice).toEqual({
      noticedAt: at(3),
      at: at(8),
      comesBack: true,
    });
    expect(mails).toHaveLength(1);
    expect(mails[0]?.to).toBe(me.email);
    expect(mails[0]?.text).toContain("save your work now");
    expect(await events("recovery.holder_notice", vm.id)).toHaveLength(1);

    await t.db
      .update(vms)
      .set({ lastHeartbeatAt: at(7) })
      .where(eq(vms.id, vm.id));
    expect(await run(fleet, at(7))).toMatchObject([{ decision: "wait" }]);
    expect((await row(vm.id))?.state).toBe("claimed");
    await t.db
      .update(vms)
      .set({ lastHeartbeatAt: at(8) })
      .where(eq(vms.id, vm.id));
    expect(await run(fleet, at(8))).toMatchObject([{ decision: "act", step: "warm_reboot" }]);
    const rebooting = await row(vm.id);
    expect(rebooting).toMatchObject({ state: "rebooting", holderId: me.id });
    expect(await history(vm.id)).toEqual([
      "recovery.detected",
      "recovery.holder_notified",
      "recovery.warm_reboot",
    ]);
    // The notice was spent on that reboot: the banner is gone (My VM shows "rebooting").
    expect((await myVm(t.db, me.id))?.recoveryNotice).toBeNull();

    // Back, healthy, with its holder: recovered.
    await t.db
      .update(vms)
      .set({ state: "claimed", healthy: true, healthReasons: [], lastHeartbeatAt: at(9) })
      .where(eq(vms.id, vm.id));
    expect(await run(fleet, at(9))).toMatchObject([{ decision: "recovered" }]);
    expect(await t.db.select().from(vmRecoveries).where(eq(vmRecoveries.vmId, vm.id))).toEqual([]);
    expect((await row(vm.id))?.holderId).toBe(me.id);
  });

  it("a VM that never recovers ends failed, fires recovery.gave_up, with its whole history in the audit log", async () => {
    const fleet = await fleetWith({ maxWarmReboots: 0, maxColdReboots: 1, maxReplacements: 0 });
    const [vm] = await makeVms(t.db, fleet, 1, "booting", { stateChangedAt: at(-30) });
    if (!vm) throw new Error("fixture");
    expect(await run(fleet, T0)).toMatchObject([{ decision: "act", step: "cold_reboot" }]);
    // The worker ran the operation: the VM went into a reboot and never came back.
    await t.db.update(operations).set({ status: "succeeded" }).where(eq(operations.vmId, vm.id));
    await t.db
      .update(vms)
      .set({ state: "rebooting", stateChangedAt: at(0) })
      .where(eq(vms.id, vm.id));
    expect(await run(fleet, at(5))).toEqual([]); // still within the 10 min a reboot may take
    expect(await run(fleet, at(11))).toMatchObject([
      { problem: "stuck_rebooting", decision: "give_up" },
    ]);
    const failed = await row(vm.id);
    expect(failed?.state).toBe("failed");
    expect(failed?.healthReasons[0]).toMatch(/automatic recovery gave up after 1 attempt/);
    expect(await history(vm.id)).toEqual([
      "recovery.detected",
      "recovery.cold_reboot",
      "recovery.gave_up",
    ]);
    const [gaveUp] = await events("recovery.gave_up", vm.id);
    expect(gaveUp?.payload).toMatchObject({
      event: "recovery.gave_up",
      data: { vmId: vm.id, attempts: 1, lastStep: "cold_reboot" },
    });
    expect(await events("vm.failed", vm.id)).toHaveLength(1);
  });

  it("a replacement inherits its predecessor's count, so replacing stops at the limit", async () => {
    const fleet = await fleetWith({ maxWarmReboots: 0, maxColdReboots: 0, maxReplacements: 1 });
    const [vm] = await makeVms(t.db, fleet, 1, "ready", { lastHeartbeatAt: at(-10) });
    if (!vm) throw new Error("fixture");
    expect(await run(fleet, T0)).toMatchObject([{ decision: "act", step: "replace" }]);
    const [op] = await t.db.select().from(operations).where(eq(operations.vmId, vm.id));
    expect(op?.kind).toBe("vm.replace");
    // The worker replaced it: the old VM is terminated, a new one with its name is up but silent.
    await t.db
      .update(operations)
      .set({ status: "succeeded" })
      .where(eq(operations.id, op?.id ?? ""));
    await t.db.update(vms).set({ state: "terminated" }).where(eq(vms.id, vm.id));
    const [next] = await makeVms(t.db, fleet, 1, "ready", {
      name: vm.name,
      lastHeartbeatAt: at(1),
      createdAt: at(1),
    });
    if (!next) throw new Error("fixture");
    expect(await run(fleet, at(20))).toMatchObject([{ vmId: next.id, decision: "give_up" }]);
    expect((await row(next.id))?.state).toBe("failed");
    const detected = await t.db
      .select({ details: auditEvents.details })
      .from(auditEvents)
      .where(and(eq(auditEvents.targetId, next.id), eq(auditEvents.action, "recovery.detected")));
    expect(detected[0]?.details).toMatchObject({ replacedVmId: vm.id, attempts: 1 });
  });

  it("does nothing on a fleet with recovery switched off or on bring-your-own machines, and one runner at a time", async () => {
    const fleet = await fleetWith({ enabled: false });
    await makeVms(t.db, fleet, 1, "ready", { lastHeartbeatAt: at(-60) });
    expect(await run(fleet, T0)).toEqual([]);
    const byo = await makeFleet(t.db, { driver: "byo" });
    await makeVms(t.db, byo, 1, "ready", { lastHeartbeatAt: at(-60) });
    expect(await run(byo, T0)).toEqual([]);

    const held = await t.db.transaction(async (tx) => {
      await tx.execute(sql`SELECT pg_advisory_xact_lock(hashtext('lablink:recovery'))`);
      return runRecovery(t.db, { now: T0 });
    });
    expect(held).toEqual({ skipped: true });
  });
});
