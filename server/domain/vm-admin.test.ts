import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../tests/db";
import { makeFleet, makeUser, makeVms } from "../../tests/fixtures";
import { type Fleet, vms } from "../db/schema";
import { acknowledge } from "./agents";
import { claimVm, heldVm, releaseVm } from "./allocation";
import { drainVm, forceReleaseVm, markVmFailed, undrainVm, vmDetail } from "./vm-admin";
import type { Actor } from "./vm-state";

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
