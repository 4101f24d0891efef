import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fleetSchedules, fleets, operations } from "../../server/db/schema";
import {
  addRecurringSchedule,
  applyRecurringSchedules,
  listRecurringSchedules,
  recurringScheduleInput,
} from "../../server/domain/recurring-schedules";
import { runDueSchedules, scheduleScale } from "../../server/domain/schedules";
import { reconcileWarmPools, setWarmPool, warmPoolPolicyOf } from "../../server/domain/warm-pool";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser } from "../fixtures";

let t: TestDatabase;
let admin: { id: string };

beforeAll(async () => {
  t = await createTestDatabase();
  admin = await makeUser(t.db, "admin");
});
afterAll(() => t?.drop());

const actor = () => ({ kind: "user" as const, id: admin.id, ip: null });
const inMinutes = (m: number) => new Date(Date.now() + m * 60_000);

async function due(fleetId: string, size: number, kind: "scale" | "destroy" = "scale") {
  const s = await scheduleScale(t.db, { fleetId, at: inMinutes(1), size, kind, actor: actor() });
  await t.db
    .update(fleetSchedules)
    .set({ at: inMinutes(-0.1) })
    .where(eq(fleetSchedules.id, s.id));
  return s;
}
const fleetRow = async (id: string) =>
  (await t.db.select().from(fleets).where(eq(fleets.id, id)))[0];
const opsOf = (fleetId: string) =>
  t.db.select().from(operations).where(eq(operations.fleetId, fleetId));

async function warmFleet(desiredReady: number) {
  const fleet = await makeFleet(t.db, { desiredSize: 0 });
  await setWarmPool(t.db, {
    fleetId: fleet.id,
    policy: { desiredReady, maxSize: 10 },
    actor: actor(),
  });
  return fleet;
}

describe("one-off schedules on warm pools, and scheduled destruction", () => {
  it("a scheduled size sets a warm pool's ready count; the reconciler scales", async () => {
    const fleet = await warmFleet(0);
    const s = await due(fleet.id, 3);
    expect(await runDueSchedules(t.db)).toContainEqual({ scheduleId: s.id, outcome: "done" });
    expect(warmPoolPolicyOf((await fleetRow(fleet.id))?.warmPool)?.desiredReady).toBe(3);
    expect(await opsOf(fleet.id)).toHaveLength(0);
    const r = await reconcileWarmPools(t.db);
    expect(r.fleets.find((f) => f.fleetId === fleet.id)).toMatchObject({
      action: "scale",
      targetSize: 3,
    });
  });

  it("a scheduled destruction requests the destroy operation, and a later size does not cancel it", async () => {
    const fleet = await makeFleet(t.db, { desiredSize: 2 });
    const destroy = await due(fleet.id, 0, "destroy");
    const [after] = await Promise.all([due(fleet.id, 5)]);
    await t.db
      .update(fleetSchedules)
      .set({ at: inMinutes(-0.05) })
      .where(eq(fleetSchedules.id, after.id));
    const runs = await runDueSchedules(t.db);
    expect(runs).toContainEqual({ scheduleId: after.id, outcome: "done" });
    // The scale took the fleet's operation slot; the destruction waits for it, not superseded.
    expect(runs).toContainEqual({ scheduleId: destroy.id, outcome: "waiting" });
    await t.db
      .update(operations)
      .set({ status: "succeeded", finishedAt: new Date() })
      .where(eq(operations.fleetId, fleet.id));
    await t.db.update(fleets).set({ status: "active" }).where(eq(fleets.id, fleet.id));
    expect(await runDueSchedules(t.db)).toContainEqual({
      scheduleId: destroy.id,
      outcome: "done",
    });
    const ops = await opsOf(fleet.id);
    expect(ops.map((o) => o.kind).sort()).toEqual(["fleet.destroy", "fleet.scale"]);
    expect((await fleetRow(fleet.id))?.status).toBe("destroying");
  });
});

describe("recurring schedules (virtual clock)", () => {
  const rule = {
    rrule: "FREQ=WEEKLY;BYDAY=TU,TH",
    timezone: "Europe/London",
    startTime: "09:00",
    endTime: "17:00",
    startDate: "2026-03-01",
    size: 8,
    fallbackSize: 0,
  };
  const monday = new Date("2026-03-30T12:00:00Z");

  it("sets 8 ready at each slot's start and 0 at its end, once each, in London time", async () => {
    const fleet = await warmFleet(0);
    const added = await addRecurringSchedule(
      t.db,
      { ...recurringScheduleInput.parse({ fleetId: fleet.id, ...rule }), actor: actor() },
      monday,
    );
    const [listed] = await listRecurringSchedules(t.db, fleet.id, monday);
    // Tuesday 31 March is in BST: 09:00 local is 08:00 UTC.
    expect(listed?.next).toEqual({ at: new Date("2026-03-31T08:00:00Z"), size: 8 });

    const ready = async () => warmPoolPolicyOf((await fleetRow(fleet.id))?.warmPool)?.desiredReady;
    const apply = async (iso: string) =>
      (await applyRecurringSchedules(t.db, { now: new Date(iso) })).filter(
        (r) => r.scheduleId === added.id,
      );

    expect(await apply("2026-03-30T13:00:00Z")).toEqual([]); // Monday: nothing due
    expect(await apply("2026-03-31T07:59:00Z")).toEqual([]);
    expect(await apply("2026-03-31T08:00:30Z")).toMatchObject([{ outcome: "applied", size: 8 }]);
    expect(await ready()).toBe(8);
    expect(await apply("2026-03-31T08:01:00Z")).toEqual([]); // once
    expect(await apply("2026-03-31T16:00:10Z")).toMatchObject([{ outcome: "applied", size: 0 }]);
    expect(await ready()).toBe(0);
    // The worker was down all Thursday: on Friday only the latest boundary (the end) applies.
    expect(await apply("2026-04-03T09:00:00Z")).toMatchObject([{ outcome: "applied", size: 0 }]);
  });

  it("on a fleet without a warm pool the slot scales the fleet, waiting while it is busy", async () => {
    const fleet = await makeFleet(t.db, { desiredSize: 0 });
    await addRecurringSchedule(
      t.db,
      { ...recurringScheduleInput.parse({ fleetId: fleet.id, ...rule, size: 4 }), actor: actor() },
      monday,
    );
    const busy = await scheduleScale(t.db, {
      fleetId: fleet.id,
      at: inMinutes(1),
      size: 1,
      actor: actor(),
    });
    await t.db
      .update(fleetSchedules)
      .set({ at: inMinutes(-0.1) })
      .where(eq(fleetSchedules.id, busy.id));
    await runDueSchedules(t.db); // takes the fleet's operation slot
    const tue = new Date("2026-03-31T08:00:30Z");
    const mine = async () =>
      (await applyRecurringSchedules(t.db, { now: tue })).filter((r) => r.fleetId === fleet.id);
    expect(await mine()).toMatchObject([{ outcome: "waiting", size: 4 }]);
    await t.db
      .update(operations)
      .set({ status: "succeeded", finishedAt: new Date() })
      .where(eq(operations.fleetId, fleet.id));
    expect(await mine()).toMatchObject([{ outcome: "applied", size: 4 }]);
    const scales = await t.db
      .select()
      .from(operations)
      .where(and(eq(operations.fleetId, fleet.id), eq(operations.status, "queued")));
    expect(scales.map((o) => o.params)).toMatchObject([{ size: 4 }]);
  });

  it("refuses a rule with no occurrence left", async () => {
    const fleet = await makeFleet(t.db);
    await expect(
      addRecurringSchedule(
        t.db,
        {
          ...recurringScheduleInput.parse({
            fleetId: fleet.id,
            ...rule,
            rrule: "FREQ=WEEKLY;UNTIL=20260301T000000Z",
          }),
          actor: actor(),
        },
        monday,
      ),
    ).rejects.toMatchObject({ code: "INVALID_INPUT", details: { field: "rrule" } });
  });
});
