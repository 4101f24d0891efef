import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, type Fleet, fleets, type users } from "../../server/db/schema";
import { releaseExpiredHolds } from "../../server/domain/hold-limits";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { apiClient, tableCounts } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let admin: typeof users.$inferSelect;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  admin = await makeUser(t.db, "admin");
});
afterAll(() => t.drop());

const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000);

async function holdFor(fleet: Fleet, minutes: number) {
  const holder = await makeUser(t.db);
  const [vm] = await makeVms(t.db, fleet, 1, "claimed", {
    holderId: holder.id,
    claimedAt: minutesAgo(minutes),
    assignmentId: crypto.randomUUID(),
  });
  if (!vm) throw new Error("fixtures");
  return vm;
}

describe("fleet.setHoldLimit", () => {
  it("changes an existing fleet's limit, audits from→to, and counts the holds already past it", async () => {
    const fleet = await makeFleet(t.db, { maxHoldMinutes: 480 });
    const long = await holdFor(fleet, 150);
    await holdFor(fleet, 30);

    const res = await api.mutate(
      "fleet.setHoldLimit",
      { fleetId: fleet.id, maxHoldMinutes: 120 },
      { userId: admin.id },
    );
    expect(res.status).toBe(200);
    expect(res.data).toEqual({ fleetId: fleet.id, maxHoldMinutes: 120, holdsPastLimit: 1 });
    const [row] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(row?.maxHoldMinutes).toBe(120);
    const [entry] = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.action, "fleet.hold_limit"), eq(auditEvents.targetId, fleet.id)));
    expect(entry).toMatchObject({ actorId: admin.id, details: { from: 480, to: 120 } });

    // The sweep reads the new limit: the long hold ends, the short one stays.
    const released = await releaseExpiredHolds(t.db);
    expect(released.map((r) => r.vmId)).toContain(long.id);
    expect(
      released.filter(
        (r) => r.vmId !== long.id && r.reason === "hold_expired" && r.maxHoldMinutes === 120,
      ),
    ).toHaveLength(0);
  });

  it("removes the limit with null", async () => {
    const fleet = await makeFleet(t.db, { maxHoldMinutes: 60 });
    await holdFor(fleet, 600);
    const res = await api.mutate(
      "fleet.setHoldLimit",
      { fleetId: fleet.id, maxHoldMinutes: null },
      { userId: admin.id },
    );
    expect(res.data).toEqual({ fleetId: fleet.id, maxHoldMinutes: null, holdsPastLimit: 0 });
    const [row] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(row?.maxHoldMinutes).toBeNull();
  });

  it("refuses bad limits, unknown and destroyed fleets, and researchers, changing nothing", async () => {
    const fleet = await makeFleet(t.db, { maxHoldMinutes: 60 });
    const gone = await makeFleet(t.db, { status: "destroyed" });
    const researcher = await makeUser(t.db);
    const before = await tableCounts(t.db);
    const cases: [unknown, string, number][] = [
      [{ fleetId: fleet.id, maxHoldMinutes: 5 }, admin.id, 400],
      [{ fleetId: fleet.id, maxHoldMinutes: 90.5 }, admin.id, 400],
      [{ fleetId: fleet.id, maxHoldMinutes: 50_000 }, admin.id, 400],
      [{ fleetId: fleet.id }, admin.id, 400],
      [{ fleetId: "not-a-uuid", maxHoldMinutes: 60 }, admin.id, 400],
      [{ fleetId: crypto.randomUUID(), maxHoldMinutes: 60 }, admin.id, 404],
      [{ fleetId: gone.id, maxHoldMinutes: 60 }, admin.id, 409],
      [{ fleetId: fleet.id, maxHoldMinutes: 120 }, researcher.id, 403],
    ];
    for (const [input, userId, status] of cases) {
      const res = await api.mutate("fleet.setHoldLimit", input, { userId });
      expect(res.status, JSON.stringify(input)).toBe(status);
    }
    expect(await tableCounts(t.db)).toEqual(before);
    const [row] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(row?.maxHoldMinutes).toBe(60);
  });
});

describe("fleet.setIdleLimit", () => {
  /** A VM held for two hours whose agent reports it idle for `idleMinutes` (null: busy). */
  async function heldIdle(fleet: Fleet, idleMinutes: number | null) {
    const holder = await makeUser(t.db);
    const [vm] = await makeVms(t.db, fleet, 1, "claimed", {
      holderId: holder.id,
      claimedAt: minutesAgo(120),
      assignmentId: crypto.randomUUID(),
      idleSince: idleMinutes === null ? null : minutesAgo(idleMinutes),
      lastHeartbeatAt: new Date(),
    });
    if (!vm) throw new Error("fixtures");
    return vm;
  }

  it("sets the idle limit, audits from→to, counts the VMs already idle past it, and the sweep releases them", async () => {
    const fleet = await makeFleet(t.db);
    const longIdle = await heldIdle(fleet, 90);
    const shortIdle = await heldIdle(fleet, 20);
    const busy = await heldIdle(fleet, null);

    const res = await api.mutate(
      "fleet.setIdleLimit",
      { fleetId: fleet.id, idleReleaseMinutes: 60 },
      { userId: admin.id },
    );
    expect(res.status).toBe(200);
    expect(res.data).toEqual({ fleetId: fleet.id, idleReleaseMinutes: 60, holdsPastLimit: 1 });
    const [row] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(row?.idleReleaseMinutes).toBe(60);
    const [entry] = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.action, "fleet.idle_limit"), eq(auditEvents.targetId, fleet.id)));
    expect(entry).toMatchObject({ actorId: admin.id, details: { from: null, to: 60 } });

    const released = (await releaseExpiredHolds(t.db)).map((r) => r.vmId);
    expect(released).toContain(longIdle.id);
    expect(released).not.toContain(shortIdle.id);
    expect(released).not.toContain(busy.id);

    // Back to never: nothing counts as past it.
    const off = await api.mutate(
      "fleet.setIdleLimit",
      { fleetId: fleet.id, idleReleaseMinutes: null },
      { userId: admin.id },
    );
    expect(off.data).toEqual({ fleetId: fleet.id, idleReleaseMinutes: null, holdsPastLimit: 0 });
  });

  it("a new fleet takes its idle limit from fleet.create", async () => {
    const res = await api.mutate(
      "fleet.create",
      {
        driver: "local",
        name: `idle-${crypto.randomUUID().slice(0, 6)}`,
        instanceType: "local",
        size: 0,
        idleReleaseMinutes: 45,
      },
      { userId: admin.id },
    );
    expect(res.status).toBe(200);
    const { fleetId } = res.data as { fleetId: string };
    const [row] = await t.db.select().from(fleets).where(eq(fleets.id, fleetId));
    expect(row?.idleReleaseMinutes).toBe(45);
  });

  it("refuses bad limits, unknown and destroyed fleets, and researchers, changing nothing", async () => {
    const fleet = await makeFleet(t.db, { idleReleaseMinutes: 60 });
    const gone = await makeFleet(t.db, { status: "destroyed" });
    const researcher = await makeUser(t.db);
    const before = await tableCounts(t.db);
    const cases: [unknown, string, number][] = [
      [{ fleetId: fleet.id, idleReleaseMinutes: 5 }, admin.id, 400],
      [{ fleetId: fleet.id, idleReleaseMinutes: 12.5 }, admin.id, 400],
      [{ fleetId: fleet.id, idleReleaseMinutes: 20_000 }, admin.id, 400],
      [{ fleetId: fleet.id, idleReleaseMinutes: "60" }, admin.id, 400],
      [{ fleetId: fleet.id }, admin.id, 400],
      [{ fleetId: fleet.id, idleReleaseMinutes: 60, maxHoldMinutes: 60 }, admin.id, 400],
      [{ fleetId: crypto.randomUUID(), idleReleaseMinutes: 60 }, admin.id, 404],
      [{ fleetId: gone.id, idleReleaseMinutes: 60 }, admin.id, 409],
      [{ fleetId: fleet.id, idleReleaseMinutes: 120 }, researcher.id, 403],
    ];
    for (const [input, userId, status] of cases) {
      const res = await api.mutate("fleet.setIdleLimit", input, { userId });
      expect(res.status, JSON.stringify(input)).toBe(status);
    }
    expect(await tableCounts(t.db)).toEqual(before);
    const [row] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(row?.idleReleaseMinutes).toBe(60);
  });
});

describe("fleet.create: root for researchers", () => {
  it("is off unless the admin turns it on, and the fleet list shows it", async () => {
    const create = (name: string, extra: Record<string, unknown>) =>
      api.mutate(
        "fleet.create",
        { driver: "local", name, instanceType: "local", size: 0, ...extra },
        { userId: admin.id },
      );
    const suffix = crypto.randomUUID().slice(0, 6);
    const plain = await create(`plain-${suffix}`, {});
    const root = await create(`root-${suffix}`, { rootForResearchers: true });
    expect([plain.status, root.status]).toEqual([200, 200]);
    const list = await api.query("fleet.list", undefined, { userId: admin.id });
    const byName = new Map(
      (list.data as { name: string; rootForResearchers: boolean }[]).map((f) => [f.name, f]),
    );
    expect(byName.get(`plain-${suffix}`)?.rootForResearchers).toBe(false);
    expect(byName.get(`root-${suffix}`)?.rootForResearchers).toBe(true);
    const bad = await create(`bad-${suffix}`, { rootForResearchers: "yes" });
    expect(bad.status).toBe(400);
  });
});
