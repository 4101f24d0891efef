import { desc, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, webhookDeliveries, webhooks } from "../../server/db/schema";
import { claimVm } from "../../server/domain/allocation";
import {
  claimOperation,
  finishOperation,
  recoverInterrupted,
  requestOperation,
} from "../../server/domain/operations";
import { markVmFailed } from "../../server/domain/vm-admin";
import { systemActor } from "../../server/domain/vm-state";
import { createWebhook, WEBHOOK_EVENT_TYPES } from "../../server/domain/webhooks";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";

let t: TestDatabase;
let hookId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  const { webhook } = await createWebhook(t.db, {
    url: "https://hooks.example.edu/lablink",
    events: [...WEBHOOK_EVENT_TYPES],
    format: "lablink",
    userId: null,
    actor: systemActor,
  });
  hookId = webhook.id;
});
afterAll(() => t?.drop());

async function deliveriesOf(event: string) {
  const rows = await t.db
    .select()
    .from(webhookDeliveries)
    .where(eq(webhookDeliveries.event, event))
    .orderBy(desc(webhookDeliveries.createdAt));
  return rows.map((r) => r.payload as { summary: string; data: Record<string, unknown> });
}

describe("webhook events where they happen", () => {
  it("vm.failed: a VM's transition to failed", async () => {
    const fleet = await makeFleet(t.db, { name: "events-failed" });
    const [vm] = await makeVms(t.db, fleet, 1, "ready");
    if (!vm) throw new Error("fixtures");
    await markVmFailed(t.db, vm.id, "GPU fell off the bus", systemActor);
    const [sent] = await deliveriesOf("vm.failed");
    expect(sent?.data).toMatchObject({ vmId: vm.id, fleetId: fleet.id, from: "ready" });
    expect(sent?.summary).toContain("GPU fell off the bus");
  });

  it("pool.empty: the claim that takes a fleet's last claimable VM, not the ones before", async () => {
    const fleet = await makeFleet(t.db, { name: "events-pool" });
    await makeVms(t.db, fleet, 2, "ready");
    await claimVm(t.db, {
      userId: (await makeUser(t.db)).id,
      fleetId: fleet.id,
      actor: systemActor,
    });
    expect((await deliveriesOf("pool.empty")).filter((d) => d.data.fleetId === fleet.id)).toEqual(
      [],
    );
    await claimVm(t.db, {
      userId: (await makeUser(t.db)).id,
      fleetId: fleet.id,
      actor: systemActor,
    });
    const sent = (await deliveriesOf("pool.empty")).filter((d) => d.data.fleetId === fleet.id);
    expect(sent).toHaveLength(1);
    expect(sent[0]?.data).toMatchObject({ fleet: "events-pool", vms: 2 });
  });

  it("quota.reached: a claim refused by a quota, once a day per researcher and fleet", async () => {
    const fleet = await makeFleet(t.db, { name: "events-quota", gpuCount: 1, gpuHoursPerWeek: 1 });
    const [vm] = await makeVms(t.db, fleet, 1, "ready");
    if (!vm) throw new Error("fixtures");
    const user = await makeUser(t.db);
    const at = (h: number) => new Date(Date.now() - h * 3_600_000);
    await t.db.insert(auditEvents).values([
      {
        at: at(3),
        actorKind: "user",
        actorId: user.id,
        action: "vm.claim",
        targetKind: "vm",
        targetId: vm.id,
        fromState: "ready",
        toState: "claimed",
      },
      {
        at: at(1),
        actorKind: "user",
        actorId: user.id,
        action: "vm.release",
        targetKind: "vm",
        targetId: vm.id,
        fromState: "claimed",
        toState: "releasing",
      },
    ]);
    const claim = () => claimVm(t.db, { userId: user.id, fleetId: fleet.id, actor: systemActor });
    await expect(claim()).rejects.toMatchObject({ code: "QUOTA_EXCEEDED" });
    await expect(claim()).rejects.toMatchObject({ code: "QUOTA_EXCEEDED" });
    const sent = (await deliveriesOf("quota.reached")).filter((d) => d.data.userId === user.id);
    expect(sent).toHaveLength(1);
    expect(sent[0]?.data).toMatchObject({ fleet: "events-quota", limitHours: 1 });
  });

  it("operation.failed and fleet.at_size: recorded with the operation's end", async () => {
    const fleet = await makeFleet(t.db, { name: "events-ops", desiredSize: 3 });
    const run = async (status: "succeeded" | "failed") => {
      const op = await requestOperation(t.db, {
        fleetId: fleet.id,
        kind: "fleet.scale",
        params: { size: 3 },
        actor: systemActor,
      });
      await claimOperation(t.db, op.id, "test-worker", 30);
      await finishOperation(t.db, op.id, "test-worker", {
        status,
        error: status === "failed" ? "terraform apply: quota exceeded" : null,
      });
      return op.id;
    };
    const ok = await run("succeeded");
    const bad = await run("failed");
    const atSize = (await deliveriesOf("fleet.at_size")).filter((d) => d.data.fleetId === fleet.id);
    expect(atSize.map((d) => d.data)).toEqual([
      { fleetId: fleet.id, fleet: "events-ops", size: 3, operationId: ok },
    ]);
    const failed = (await deliveriesOf("operation.failed")).filter(
      (d) => d.data.fleetId === fleet.id,
    );
    expect(failed).toHaveLength(1);
    expect(failed[0]?.data).toMatchObject({ operationId: bad, kind: "fleet.scale" });
    expect(failed[0]?.summary).toContain("terraform apply: quota exceeded");
  });

  it("operation.failed: an operation given up after its worker died", async () => {
    const fleet = await makeFleet(t.db, { name: "events-recover" });
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.scale",
      params: { size: 1 },
      actor: systemActor,
      maxAttempts: 1,
    });
    await claimOperation(t.db, op.id, "dead-worker", -1);
    await recoverInterrupted(t.db);
    const failed = (await deliveriesOf("operation.failed")).filter(
      (d) => d.data.operationId === op.id,
    );
    expect(failed).toHaveLength(1);
  });

  it("sends nothing to a disabled webhook or for an event it did not choose", async () => {
    await t.db.update(webhooks).set({ enabled: false }).where(eq(webhooks.id, hookId));
    const fleet = await makeFleet(t.db, { name: "events-disabled" });
    const [vm] = await makeVms(t.db, fleet, 1, "ready");
    if (!vm) throw new Error("fixtures");
    await markVmFailed(t.db, vm.id, "disabled hook", systemActor);
    expect((await deliveriesOf("vm.failed")).filter((d) => d.data.vmId === vm.id)).toEqual([]);
    await t.db
      .update(webhooks)
      .set({ enabled: true, events: ["pool.empty"] })
      .where(eq(webhooks.id, hookId));
    const [other] = await makeVms(t.db, fleet, 1, "ready");
    if (!other) throw new Error("fixtures");
    await markVmFailed(t.db, other.id, "not chosen", systemActor);
    expect((await deliveriesOf("vm.failed")).filter((d) => d.data.vmId === other.id)).toEqual([]);
  });
});
