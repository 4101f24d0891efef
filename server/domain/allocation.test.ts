import { and, eq, isNotNull, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../tests/db";
import { makeFleet, makeUser, makeUsers, makeVms } from "../../tests/fixtures";
import { auditEvents, type Vm, vms } from "../db/schema";
import { acknowledge } from "./agents";
import { claimVm, heldVm, releaseVm } from "./allocation";
import { DomainError } from "./errors";
import { poolSummary } from "./pool";
import type { Actor } from "./vm-state";

let t: TestDatabase;
beforeAll(async () => {
  // Enough connections that 200 claims really run concurrently.
  t = await createTestDatabase({ max: 60 });
});
afterAll(() => t.drop());

const actorOf = (id: string): Actor => ({ kind: "user", id });

describe("contested claims", () => {
  for (let run = 1; run <= 3; run++) {
    it(`200 researchers racing for 50 VMs: exactly 50 winners (run ${run})`, async () => {
      const fleet = await makeFleet(t.db);
      await makeVms(t.db, fleet, 50, "ready");
      const people = await makeUsers(t.db, 200);
      const results = await Promise.allSettled(
        people.map((p) => claimVm(t.db, { userId: p.id, fleetId: fleet.id, actor: actorOf(p.id) })),
      );
      const won = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
      const lost = results.flatMap((r) => (r.status === "rejected" ? [r.reason] : []));
      expect(won).toHaveLength(50);
      expect(won.every((w) => !w.rejoined)).toBe(true);
      expect(lost).toHaveLength(150);
      for (const e of lost) {
        expect(e).toBeInstanceOf(DomainError);
        expect(e.code).toBe("NO_CAPACITY");
        expect(e.message).toMatch(/No GPU VM is free/);
      }
      // No VM handed out twice, no researcher holding two — per the winners AND per the database.
      expect(new Set(won.map((w) => w.vm.id)).size).toBe(50);
      const held = await t.db
        .select({ id: vms.id, holderId: vms.holderId })
        .from(vms)
        .where(and(eq(vms.fleetId, fleet.id), isNotNull(vms.holderId)));
      expect(held).toHaveLength(50);
      expect(new Set(held.map((h) => h.holderId)).size).toBe(50);
      const claims = await t.db
        .select({ n: sql<number>`count(*)::int` })
        .from(auditEvents)
        .where(
          and(
            eq(auditEvents.action, "vm.claim"),
            sql`${auditEvents.targetId} IN (SELECT id::text FROM vms WHERE fleet_id = ${fleet.id})`,
          ),
        );
      expect(claims[0]?.n).toBe(50);
    });
  }

  it("one researcher claiming from 20 concurrent requests gets one VM", async () => {
    const fleet = await makeFleet(t.db);
    await makeVms(t.db, fleet, 30, "ready");
    const me = await makeUser(t.db);
    const results = await Promise.all(
      Array.from({ length: 20 }, () =>
        claimVm(t.db, { userId: me.id, fleetId: fleet.id, actor: actorOf(me.id) }),
      ),
    );
    expect(new Set(results.map((r) => r.vm.id)).size).toBe(1);
    expect(results.filter((r) => !r.rejoined)).toHaveLength(1);
    const mine = await t.db.select().from(vms).where(eq(vms.holderId, me.id));
    expect(mine).toHaveLength(1);
    const ready = await t.db
      .select()
      .from(vms)
      .where(and(eq(vms.fleetId, fleet.id), eq(vms.state, "ready")));
    expect(ready).toHaveLength(29);
  });
});

describe("claim and release", () => {
  it("a repeated claim returns the VM already held (rejoin)", async () => {
    const fleet = await makeFleet(t.db);
    await makeVms(t.db, fleet, 2, "ready");
    const me = await makeUser(t.db);
    const first = await claimVm(t.db, { userId: me.id, fleetId: fleet.id, actor: actorOf(me.id) });
    const again = await claimVm(t.db, { userId: me.id, actor: actorOf(me.id) });
    expect(again.rejoined).toBe(true);
    expect(again.vm.id).toBe(first.vm.id);
  });

  it("skips unhealthy and non-ready VMs and explains an empty pool", async () => {
    const fleet = await makeFleet(t.db);
    await makeVms(t.db, fleet, 1, "ready", { healthy: false });
    await makeVms(t.db, fleet, 2, "booting");
    const me = await makeUser(t.db);
    const err = await claimVm(t.db, {
      userId: me.id,
      fleetId: fleet.id,
      actor: actorOf(me.id),
    }).catch((e) => e);
    expect(err).toMatchObject({
      code: "NO_CAPACITY",
      details: { ready: 0, booting: 2, unhealthy: 1 },
    });
    expect(err.message).toBe(
      "No GPU VM is free right now: 0 ready, 2 starting up. Try again in a few minutes.",
    );
  });

  it("hands out a ready VM whose row another transaction holds locked for a few milliseconds", async () => {
    const fleet = await makeFleet(t.db);
    const [vm] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    const me = await makeUser(t.db);
    // Like the heartbeat flush's UPDATE: the row is locked, then released without a change.
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => {
      locked = r;
    });
    const tx = t.sql.begin(async (sql) => {
      await sql`SELECT id FROM vms WHERE id = ${vm.id} FOR UPDATE`;
      locked();
      await held;
    });
    await isLocked;
    // The lock goes as soon as the claim's first statement has answered (it skipped the row).
    const attempts: number[] = [];
    const client = {
      unsafe: (...args: Parameters<typeof t.sql.unsafe>) =>
        t.sql.unsafe(...args).then((rows) => {
          // Only the claim statement (not the pool-empty check after a claim).
          if (!String(args[0]).includes("'vm.claim'")) return rows;
          attempts.push(rows.length);
          if (attempts.length === 1) release();
          return rows;
        }),
    };
    const { vm: got } = await claimVm({ session: { client } } as unknown as typeof t.db, {
      userId: me.id,
      fleetId: fleet.id,
      actor: actorOf(me.id),
    });
    await tx;
    expect(got.id).toBe(vm.id);
    expect(attempts).toHaveLength(2);
  });

  it("says what the VMs are doing when none is free", async () => {
    const fleet = await makeFleet(t.db);
    await makeVms(t.db, fleet, 1, "ready", { healthy: false });
    for (const holder of await makeUsers(t.db, 2)) {
      await makeVms(t.db, fleet, 1, "claimed", {
        holderId: holder.id,
        assignmentId: crypto.randomUUID(),
      });
    }
    const me = await makeUser(t.db);
    const err = await claimVm(t.db, {
      userId: me.id,
      fleetId: fleet.id,
      actor: actorOf(me.id),
    }).catch((e) => e);
    expect(err).toMatchObject({ code: "NO_CAPACITY", details: { inUse: 2, unhealthy: 1 } });
    expect(err.message).toBe(
      "No GPU VM is free right now: 2 in use, 1 out of service, none starting up.",
    );
  });

  it("filters by instance type", async () => {
    const small = await makeFleet(t.db, { instanceType: "g4dn.xlarge" });
    const big = await makeFleet(t.db, { instanceType: `p4d.${crypto.randomUUID().slice(0, 6)}` });
    await makeVms(t.db, small, 1, "ready");
    const [bigVm] = await makeVms(t.db, big, 1, "ready");
    const me = await makeUser(t.db);
    const { vm } = await claimVm(t.db, {
      userId: me.id,
      instanceType: big.instanceType,
      actor: actorOf(me.id),
    });
    expect(vm.id).toBe(bigVm?.id);
  });

  it("release → releasing, wipe acknowledged → ready again, then claimable", async () => {
    const fleet = await makeFleet(t.db);
    await makeVms(t.db, fleet, 1, "ready");
    const me = await makeUser(t.db);
    const { vm } = await claimVm(t.db, { userId: me.id, fleetId: fleet.id, actor: actorOf(me.id) });
    const released = await releaseVm(t.db, { userId: me.id, actor: actorOf(me.id) });
    expect(released).toMatchObject({ id: vm.id, state: "releasing", holderId: null });
    expect(await heldVm(t.db, me.id)).toBeNull();
    // Not claimable until the agent has wiped it.
    const other = await makeUser(t.db);
    await expect(
      claimVm(t.db, { userId: other.id, fleetId: fleet.id, actor: actorOf(other.id) }),
    ).rejects.toMatchObject({ code: "NO_CAPACITY" });
    if (!vm.assignmentId) throw new Error("claimed VM has no assignment");
    await acknowledge(
      t.db,
      { vmId: vm.id, type: "wipe", assignmentId: vm.assignmentId, ok: true },
      { kind: "agent", id: vm.id },
    );
    const [after] = await t.db.select().from(vms).where(eq(vms.id, vm.id));
    expect(after).toMatchObject({ state: "ready", assignmentId: null, holderId: null });
    const again = await claimVm(t.db, {
      userId: other.id,
      fleetId: fleet.id,
      actor: actorOf(other.id),
    });
    expect(again.vm.id).toBe(vm.id);
  });

  it("works inside a caller's transaction, and rolls back with it", async () => {
    const fleet = await makeFleet(t.db);
    await makeVms(t.db, fleet, 1, "ready");
    const me = await makeUser(t.db);
    await t.db
      .transaction(async (tx) => {
        const { vm } = await claimVm(tx, {
          userId: me.id,
          fleetId: fleet.id,
          actor: actorOf(me.id),
        });
        expect(vm.state).toBe("claimed");
        throw new Error("roll back");
      })
      .catch(() => undefined);
    expect(await heldVm(t.db, me.id)).toBeNull();
    const ready = await t.db
      .select()
      .from(vms)
      .where(and(eq(vms.fleetId, fleet.id), eq(vms.state, "ready")));
    expect(ready).toHaveLength(1);
  });

  it("claiming from a fleet that does not exist is NOT_FOUND, not NO_CAPACITY", async () => {
    const me = await makeUser(t.db);
    await expect(
      claimVm(t.db, { userId: me.id, fleetId: crypto.randomUUID(), actor: actorOf(me.id) }),
    ).rejects.toMatchObject({ code: "NOT_FOUND", message: "No such fleet." });
  });

  it("releasing with nothing held is a clear NOT_FOUND", async () => {
    const me = await makeUser(t.db);
    await expect(releaseVm(t.db, { userId: me.id, actor: actorOf(me.id) })).rejects.toMatchObject({
      code: "NOT_FOUND",
      message: "You do not hold a VM, so there is nothing to release.",
    });
  });

  it("the database itself refuses a second held VM for one researcher", async () => {
    const fleet = await makeFleet(t.db);
    const me = await makeUser(t.db);
    await makeVms(t.db, fleet, 1, "claimed", { holderId: me.id });
    await expect(makeVms(t.db, fleet, 1, "claimed", { holderId: me.id })).rejects.toThrow();
  });

  it("pool summary counts per fleet", async () => {
    const fleet = await makeFleet(t.db, { name: `zz-summary-${crypto.randomUUID().slice(0, 4)}` });
    await makeVms(t.db, fleet, 3, "ready");
    await makeVms(t.db, fleet, 1, "booting");
    await makeVms(t.db, fleet, 1, "terminated");
    const summary = await poolSummary(t.db);
    const mine = summary.fleets.find((f) => f.fleetId === fleet.id);
    expect(mine).toMatchObject({ ready: 3, booting: 1, inUse: 0, total: 4 });
  });
});
