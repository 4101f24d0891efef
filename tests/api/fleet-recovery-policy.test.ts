import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, fleets, type users } from "../../server/db/schema";
import { DEFAULT_RECOVERY_POLICY } from "../../server/domain/recovery-policy";
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
afterAll(() => t.drop());

describe("fleet.setRecoveryPolicy", () => {
  it("changes the given settings, keeps the rest, stores only overrides, audits from→to; fleet.list shows it", async () => {
    const fleet = await makeFleet(t.db);
    const res = await api.mutate(
      "fleet.setRecoveryPolicy",
      { fleetId: fleet.id, policy: { silentMinutes: 5, maxColdReboots: 3 } },
      { userId: admin.id },
    );
    expect(res.status).toBe(200);
    expect(res.data).toEqual({ ...DEFAULT_RECOVERY_POLICY, silentMinutes: 5, maxColdReboots: 3 });
    const [row] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(row?.recoveryPolicy).toEqual({ silentMinutes: 5, maxColdReboots: 3 });

    // Back to a default value: no longer stored as an override.
    await api.mutate(
      "fleet.setRecoveryPolicy",
      { fleetId: fleet.id, policy: { silentMinutes: 3, enabled: false } },
      { userId: admin.id },
    );
    const [after] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(after?.recoveryPolicy).toEqual({ maxColdReboots: 3, enabled: false });

    const audits = await t.db
      .select()
      .from(auditEvents)
      .where(
        and(eq(auditEvents.targetId, fleet.id), eq(auditEvents.action, "fleet.recovery_policy")),
      );
    expect(audits).toHaveLength(2);
    expect(audits[0]).toMatchObject({ actorKind: "user", actorId: admin.id });
    expect(audits[0]?.details).toMatchObject({
      from: { silentMinutes: 3 },
      to: { silentMinutes: 5, maxColdReboots: 3 },
    });

    const list = await api.query("fleet.list", undefined, { userId: admin.id });
    const shown = (list.data as { id: string; recovery: unknown; recovering: number }[]).find(
      (f) => f.id === fleet.id,
    );
    expect(shown).toMatchObject({
      recovery: { ...DEFAULT_RECOVERY_POLICY, maxColdReboots: 3, enabled: false },
      recovering: 0,
    });
  });

  it("refuses bad values (400) and non-admins (403), changing nothing", async () => {
    const fleet = await makeFleet(t.db);
    const researcher = await makeUser(t.db);
    const before = await tableCounts(t.db);
    const cases: [unknown, string, number][] = [
      [{ fleetId: fleet.id, policy: {} }, admin.id, 400],
      [{ fleetId: fleet.id, policy: { silentMinutes: 0 } }, admin.id, 400],
      [{ fleetId: fleet.id, policy: { maxWarmReboots: 11 } }, admin.id, 400],
      [{ fleetId: fleet.id, policy: { cooldownMinutes: 1.5 } }, admin.id, 400],
      [{ fleetId: fleet.id, policy: { reboot: true } }, admin.id, 400],
      [{ fleetId: crypto.randomUUID(), policy: { silentMinutes: 5 } }, admin.id, 404],
      [{ fleetId: fleet.id, policy: { silentMinutes: 5 } }, researcher.id, 403],
    ];
    for (const [input, userId, status] of cases) {
      const res = await api.mutate("fleet.setRecoveryPolicy", input, { userId });
      expect(res.status, JSON.stringify(input)).toBe(status);
    }
    expect(await tableCounts(t.db)).toEqual(before);
  });
});
