import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fleetSchedules, type users } from "../../server/db/schema";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser } from "../fixtures";
import { apiClient, tableCounts } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let admin: typeof users.$inferSelect;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  admin = await makeUser(t.db, "admin");
});
afterAll(() => t?.drop());

const inHours = (h: number) => new Date(Date.now() + h * 3_600_000);

describe("fleet.scheduleScale, fleet.schedules, fleet.cancelSchedule", () => {
  it("schedules a size, lists it with its time as a Date, and cancels it", async () => {
    const fleet = await makeFleet(t.db);
    const at = inHours(2);
    const res = await api.mutate(
      "fleet.scheduleScale",
      { fleetId: fleet.id, at, size: 12 },
      { userId: admin.id },
    );
    expect(res.status).toBe(200);
    const created = res.data as { id: string; at: Date; size: number; status: string };
    expect(created).toMatchObject({ size: 12, status: "pending" });
    expect(created.at).toBeInstanceOf(Date);
    expect(created.at.getTime()).toBe(at.getTime());
    const [row] = await t.db.select().from(fleetSchedules).where(eq(fleetSchedules.id, created.id));
    expect(row?.createdBy).toBe(admin.id);

    const list = await api.query("fleet.schedules", { fleetId: fleet.id }, { userId: admin.id });
    expect((list.data as { id: string }[]).map((s) => s.id)).toEqual([created.id]);

    const cancelled = await api.mutate(
      "fleet.cancelSchedule",
      { scheduleId: created.id },
      { userId: admin.id },
    );
    expect((cancelled.data as { status: string }).status).toBe("cancelled");
    const again = await api.mutate(
      "fleet.cancelSchedule",
      { scheduleId: created.id },
      { userId: admin.id },
    );
    expect(again.status).toBe(409);
  });

  it("refuses bad input with 400, unknown fleets with 404, and changes nothing", async () => {
    const fleet = await makeFleet(t.db);
    const byo = await makeFleet(t.db, { driver: "byo" });
    const before = await tableCounts(t.db);
    const cases: [unknown, number, RegExp?][] = [
      [{ fleetId: fleet.id, at: inHours(-1), size: 2 }, 400, /Pick a time in the future/],
      [{ fleetId: fleet.id, at: inHours(24 * 400), size: 2 }, 400, /within a year/],
      [{ fleetId: fleet.id, at: inHours(1), size: -1 }, 400],
      [{ fleetId: fleet.id, at: inHours(1), size: 201 }, 400],
      [{ fleetId: fleet.id, at: "tomorrow", size: 2 }, 400],
      [{ fleetId: fleet.id, at: new Date(Number.NaN), size: 2 }, 400],
      [{ fleetId: fleet.id, size: 2 }, 400],
      [{ fleetId: byo.id, at: inHours(1), size: 2 }, 400, /bring-your-own/],
      [{ fleetId: crypto.randomUUID(), at: inHours(1), size: 2 }, 404],
    ];
    for (const [input, status, message] of cases) {
      const res = await api.mutate("fleet.scheduleScale", input, { userId: admin.id });
      expect(res.status, JSON.stringify(input)).toBe(status);
      if (message) expect(JSON.stringify(res.error)).toMatch(message);
    }
    expect(await tableCounts(t.db)).toEqual(before);
  });
});
