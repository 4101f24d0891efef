import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../tests/db";
import { makeFleet, makeUser, makeVms } from "../../tests/fixtures";
import { type Fleet, operations, vms } from "../db/schema";
import { acknowledge, commandsFor, registerAgent } from "./agents";
import { claimVm, heldVm, releaseVm } from "./allocation";
import { researchAccountName } from "./replacement";
import { drainVm, forceReleaseVm, markVmFailed, undrainVm, vmDetail } from "./vm-admin";
import { type Actor, systemActor, transition } from "./vm-state";

let t: TestDatabase;
let fleet: Fleet;
let admin: Actor;
beforeAll(async () => {
  t = await createTestDatabase();
  fleet = await makeFleet(t.db);
  admin = { kind: "user", id: (await makeUser(t.db, "admin")).id };
});
afterAll(() => t.drop());

const row = async (id: string) => (await t.db.select().from(vms).where(eq(vms.id, id)))[0];

async function claimed() {
  const f = await makeFleet(t.db);
  await makeVms(t.db, f, 1, "ready");
  const me = await makeUser(t.db);
  const { vm } = await claimVm(t.db, {
    userId: me.id,
    fleetId: f.id,
    actor: { kind: "user", id: me.id },
  });
  return { vm, me, fleet: f };
}

describe("admin VM actions", () => {
  it("draining a ready VM takes it out of the pool; undraining puts it back", async () => {
    const [vm] = await makeVms(t.db, fleet, 1, "ready");
    if (!vm) throw new Error("fixture");
    expect((await drainVm(t.db, vm.id, admin)).state).toBe("draining");
    const me = await makeUser(t.db);
    await expect(
      claimVm(t.db, { userId: me.id, fleetId: fleet.id, actor: admin }),
    ).rejects.toMatchObject({ code: "NO_CAPACITY" });
    expect((await undrainVm(t.db, vm.id, admin)).state).toBe("ready");
    expect((await row(vm.id))?.drainRequested).toBe(false);
  });

  it("draining a held VM keeps the researcher on it, and after release the VM stays out of the pool", async () => {
    const { vm, me } = await claimed();
    const drained = await drainVm(t.db, vm.id, admin);
    expect(drained).toMatchObject({ state: "draining", holderId: me.id, drainRequested: true });
    expect((await heldVm(t.db, me.id))?.id).toBe(vm.id);
    await releaseVm(t.db, { userId: me.id, actor: { kind: "user", id: me.id } });
    await acknowledge(
      t.db,
      { vmId: vm.id, type: "wipe", assignmentId: vm.assignmentId as string, ok: true },
      { kind: "agent", id: vm.id },
    );
    expect((await row(vm.id))?.state).toBe("draining");
  });

  it("undraining a held VM gives it back to its holder", async () => {
    const { vm, me } = await claimed();
    await drainVm(t.db, vm.id, admin);
    expect(await undrainVm(t.db, vm.id, admin)).toMatchObject({
      state: "claimed",
      holderId: me.id,
    });
  });

  it("force release frees the holder and sends the VM to be wiped", async () => {
    const { vm, me } = await claimed();
    expect(await forceReleaseVm(t.db, vm.id, admin)).toMatchObject({
      state: "releasing",
      holderId: null,
    });
    expect(await heldVm(t.db, me.id)).toBeNull();
    await expect(forceReleaseVm(t.db, vm.id, admin)).rejects.toMatchObject({
      code: "STATE_CONFLICT",
    });
  });

  it("mark failed frees the holder, records the reason, and is refused for a terminated VM", async () => {
    const { vm, me } = await claimed();
    const failed = await markVmFailed(t.db, vm.id, "GPU fell off the bus", admin);
    expect(failed).toMatchObject({ state: "failed", holderId: null, healthy: false });
    expect(failed.healthReasons[0]).toMatch(/GPU fell off the bus/);
    expect(await heldVm(t.db, me.id)).toBeNull();
    const [gone] = await makeVms(t.db, fleet, 1, "terminated");
    await expect(markVmFailed(t.db, gone?.id as string, "x", admin)).rejects.toMatchObject({
      code: "ILLEGAL_TRANSITION",
    });
  });

  it("detail shows holder and history, newest first, without assignment internals", async () => {
    const { vm, me } = await claimed();
    await drainVm(t.db, vm.id, admin);
    const d = await vmDetail(t.db, vm.id);
    expect(d.holder?.id).toBe(me.id);
    expect(d.history.map((h) => h.action)).toEqual(["vm.drain", "vm.claim"]);
    expect(d).not.toHaveProperty("assignmentId");
    await expect(vmDetail(t.db, crypto.randomUUID())).rejects.toMatchObject({ code: "NOT_FOUND" });
  });
});

const settings = { heartbeatIntervalS: 15 };
const agentActor = (vmId: string): Actor => ({ kind: "agent", id: vmId });
/** The agent of a rebooted VM registers with a new boot id. */
const registerAfterBoot = (vmId: string) =>
  registerAgent(
    t.db,
    {
      vmId,
      bootId: crypto.randomUUID(),
      hostname: "vm",
      agentVersion: "test",
      protocolVersion: 1,
      gpus: [],
      health: { healthy: true, reasons: [] },
    },
    settings,
    agentActor(vmId),
  );

async function rebooted(vmId: string) {
  await transition(t.db, { vmId, to: "rebooting", actor: systemActor, action: "driver.reboot" });
  return registerAfterBoot(vmId);
}

describe("a VM reaches ready only after an acknowledged wipe", () => {
  it("a VM an admin marked failed goes through a wipe after its reboot, not straight to ready", async () => {
    const { vm } = await claimed();
    await markVmFailed(t.db, vm.id, "suspicious", admin);
    const reply = await rebooted(vm.id);
    expect(reply.state).toBe("releasing");
    const wipe = reply.commands.find((c) => c.type === "wipe");
    expect(wipe).toBeTruthy();
    expect((await row(vm.id))?.state).toBe("releasing");
    await acknowledge(
      t.db,
      { vmId: vm.id, type: "wipe", assignmentId: wipe?.assignmentId as string, ok: true },
      agentActor(vm.id),
    );
    expect((await row(vm.id))?.state).toBe("ready");
  });

  it("a pool VM an admin rebooted is wiped under a fresh assignment id before it is ready", async () => {
    const [vm] = await makeVms(t.db, fleet, 1, "ready");
    if (!vm) throw new Error("fixture");
    const reply = await rebooted(vm.id);
    expect(reply.state).toBe("releasing");
    const after = await row(vm.id);
    expect(after?.assignmentId).toMatch(/^[0-9a-f-]{36}$/);
    expect(reply.commands).toEqual([{ type: "wipe", assignmentId: after?.assignmentId }]);
  });

  it("a failed wipe leaves the VM failed, and its reboot asks for the wipe again", async () => {
    const { vm, me } = await claimed();
    await releaseVm(t.db, { userId: me.id, actor: { kind: "user", id: me.id } });
    await acknowledge(
      t.db,
      { vmId: vm.id, type: "wipe", assignmentId: vm.assignmentId as string, ok: false, error: "x" },
      agentActor(vm.id),
    );
    expect((await row(vm.id))?.state).toBe("failed");
    const reply = await rebooted(vm.id);
    expect(reply.state).toBe("releasing");
    expect(reply.commands).toEqual([{ type: "wipe", assignmentId: vm.assignmentId }]);
  });

  it("a held VM comes back to its holder after a reboot", async () => {
    const { vm, me } = await claimed();
    const reply = await rebooted(vm.id);
    expect(reply.state).toBe("claimed");
    expect((await row(vm.id))?.holderId).toBe(me.id);
    const assign = reply.commands.find((c) => c.type === "assign");
    expect(assign).toMatchObject({
      account: { name: researchAccountName(vm.assignmentId as string), root: false },
    });
  });
});

describe("fleets with root for researchers", () => {
  it("the assign command grants root, and the wipe acknowledgement replaces the VM instead of readying it", async () => {
    const f = await makeFleet(t.db, { rootForResearchers: true });
    await makeVms(t.db, f, 1, "ready");
    const me = await makeUser(t.db);
    const { vm } = await claimVm(t.db, {
      userId: me.id,
      fleetId: f.id,
      actor: { kind: "user", id: me.id },
    });
    const [assign] = await commandsFor(t.db, vm);
    expect(assign).toMatchObject({ type: "assign", account: { root: true } });
    await releaseVm(t.db, { userId: me.id, actor: { kind: "user", id: me.id } });
    await acknowledge(
      t.db,
      { vmId: vm.id, type: "wipe", assignmentId: vm.assignmentId as string, ok: true },
      agentActor(vm.id),
    );
    expect(await row(vm.id)).toMatchObject({ state: "terminating", holderId: null });
    const ops = await t.db
      .select()
      .from(operations)
      .where(and(eq(operations.fleetId, f.id), eq(operations.vmId, vm.id)));
    expect(ops.map((o) => [o.kind, o.status])).toEqual([["vm.replace", "queued"]]);
  });

  it("while the fleet is busy the acknowledgement changes nothing, so the agent's next one retries", async () => {
    const f = await makeFleet(t.db, { rootForResearchers: true });
    await makeVms(t.db, f, 1, "ready");
    const me = await makeUser(t.db);
    const { vm } = await claimVm(t.db, {
      userId: me.id,
      fleetId: f.id,
      actor: { kind: "user", id: me.id },
    });
    await releaseVm(t.db, { userId: me.id, actor: { kind: "user", id: me.id } });
    await t.db.insert(operations).values({ fleetId: f.id, kind: "fleet.scale", params: {} });
    const ack = {
      vmId: vm.id,
      type: "wipe" as const,
      assignmentId: vm.assignmentId as string,
      ok: true,
    };
    await expect(acknowledge(t.db, ack, agentActor(vm.id))).rejects.toMatchObject({
      code: "STATE_CONFLICT",
    });
    expect((await row(vm.id))?.state).toBe("releasing");
  });
});
