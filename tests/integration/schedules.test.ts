import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, fleetSchedules, fleets, operations } from "../../server/db/schema";
import {
  cancelSchedule,
  listSchedules,
  runDueSchedules,
  scheduleScale,
} from "../../server/domain/schedules";
import { allJobs } from "../../server/jobs/definitions";
import { JobRunner } from "../../server/jobs/runner";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser } from "../fixtures";
import { runJob } from "../jobs";

let t: TestDatabase;
let admin: { id: string };

beforeAll(async () => {
  t = await createTestDatabase();
  admin = await makeUser(t.db, "admin");
});
afterAll(() => t?.drop());

const actor = () => ({ kind: "user" as const, id: admin.id, ip: null });
const inMinutes = (m: number) => new Date(Date.now() + m * 60_000);

/** Makes a schedule that is already due: created for the future, then moved `minutesAgo` back. */
async function dueSchedule(fleetId: string, size: number, minutesAgo: number) {
  const s = await scheduleScale(t.db, { fleetId, at: inMinutes(1), size, actor: actor() });
  await t.db
    .update(fleetSchedules)
    .set({ at: inMinutes(-minutesAgo) })
    .where(eq(fleetSchedules.id, s.id));
  return s;
}

async function scheduleRow(id: string) {
  const [row] = await t.db.select().from(fleetSchedules).where(eq(fleetSchedules.id, id));
  return row;
}

describe("scheduled fleet sizes", () => {
  it("a due change requests the scale operation, once, and records it", async () => {
    const fleet = await makeFleet(t.db, { desiredSize: 0 });
    const s = await dueSchedule(fleet.id, 3, 0.1);
    const later = await scheduleScale(t.db, {
      fleetId: fleet.id,
      at: inMinutes(60),
      size: 0,
      actor: actor(),
    });

    const runs = await runDueSchedules(t.db);
    expect(runs).toContainEqual({ scheduleId: s.id, outcome: "done" });
    expect(runs.map((r) => r.scheduleId)).not.toContain(later.id);
    const row = await scheduleRow(s.id);
    expect(row).toMatchObject({ status: "done" });
    const [op] = await t.db
      .select()
      .from(operations)
      .where(eq(operations.id, row?.operationId as string));
    expect(op).toMatchObject({
      kind: "fleet.scale",
      status: "queued",
      params: { size: 3, from: 0 },
    });
    const [f] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(f?.status).toBe("scaling");

    // Run again: nothing more.
    expect((await runDueSchedules(t.db)).map((r) => r.scheduleId)).not.toContain(s.id);
    expect(
      await t.db.select().from(operations).where(eq(operations.fleetId, fleet.id)),
    ).toHaveLength(1);
    expect((await scheduleRow(later.id))?.status).toBe("pending");
    // The fleet's list: pending first, then finished.
    expect((await listSchedules(t.db, fleet.id)).map((x) => [x.id, x.status])).toEqual([
      [later.id, "pending"],
      [s.id, "done"],
    ]);
  });

  it("only the latest missed change of a fleet runs; the earlier ones are superseded", async () => {
    const fleet = await makeFleet(t.db);
    const morning = await dueSchedule(fleet.id, 30, 8 * 60);
    const evening = await dueSchedule(fleet.id, 0, 10);
    const runs = await runDueSchedules(t.db);
    expect(runs).toContainEqual({ scheduleId: evening.id, outcome: "done" });
    expect(runs).toContainEqual({ scheduleId: morning.id, outcome: "superseded" });
    expect((await scheduleRow(morning.id))?.note).toBe("A later scheduled change replaced it.");
    const ops = await t.db.select().from(operations).where(eq(operations.fleetId, fleet.id));
    expect(ops.map((o) => o.params)).toEqual([{ size: 0, from: fleet.desiredSize }]);
  });

  it("waits while the fleet is busy, then runs; fails after an hour of waiting", async () => {
    const fleet = await makeFleet(t.db);
    const [busy] = await t.db
      .insert(operations)
      .values({ fleetId: fleet.id, kind: "fleet.create", status: "running" })
      .returning();
    const s = await dueSchedule(fleet.id, 2, 1);
    expect(await runDueSchedules(t.db)).toContainEqual({ scheduleId: s.id, outcome: "waiting" });
    expect((await scheduleRow(s.id))?.status).toBe("pending");

    await t.db
      .update(operations)
      .set({ status: "succeeded" })
      .where(eq(operations.id, busy?.id as string));
    expect(await runDueSchedules(t.db)).toContainEqual({ scheduleId: s.id, outcome: "done" });

    const other = await makeFleet(t.db);
    await t.db
      .insert(operations)
      .values({ fleetId: other.id, kind: "fleet.scale", status: "queued" });
    const stale = await dueSchedule(other.id, 2, 61);
    expect(await runDueSchedules(t.db)).toContainEqual({ scheduleId: stale.id, outcome: "failed" });
    expect((await scheduleRow(stale.id))?.note).toMatch(
      /busy with another operation for 60 minutes/,
    );
  });

  it("fails a change whose fleet was destroyed before it was due", async () => {
    const fleet = await makeFleet(t.db);
    const s = await dueSchedule(fleet.id, 2, 1);
    await t.db.update(fleets).set({ status: "destroyed" }).where(eq(fleets.id, fleet.id));
    expect(await runDueSchedules(t.db)).toContainEqual({ scheduleId: s.id, outcome: "failed" });
    expect((await scheduleRow(s.id))?.note).toBe("The fleet was destroyed before it was due.");
  });

  it("refuses the past, more than a year ahead, bring-your-own and destroyed fleets", async () => {
    const fleet = await makeFleet(t.db);
    const byo = await makeFleet(t.db, { driver: "byo" });
    const gone = await makeFleet(t.db, { status: "destroyed" });
    const refused = (fleetId: string, at: Date) =>
      scheduleScale(t.db, { fleetId, at, size: 1, actor: actor() });
    await expect(refused(fleet.id, inMinutes(-1))).rejects.toMatchObject({
      code: "INVALID_INPUT",
      message: "Pick a time in the future.",
    });
    await expect(refused(fleet.id, inMinutes(367 * 24 * 60))).rejects.toMatchObject({
      code: "INVALID_INPUT",
    });
    await expect(refused(byo.id, inMinutes(10))).rejects.toMatchObject({ code: "INVALID_INPUT" });
    await expect(refused(gone.id, inMinutes(10))).rejects.toMatchObject({
      code: "STATE_CONFLICT",
    });
    await expect(refused(crypto.randomUUID(), inMinutes(10))).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
    expect(
      await t.db.select().from(fleetSchedules).where(eq(fleetSchedules.fleetId, fleet.id)),
    ).toHaveLength(0);
  });

  it("cancels a pending change, audited; a finished one cannot be cancelled", async () => {
    const fleet = await makeFleet(t.db);
    const s = await scheduleScale(t.db, {
      fleetId: fleet.id,
      at: inMinutes(30),
      size: 4,
      actor: actor(),
    });
    const cancelled = await cancelSchedule(t.db, s.id, actor());
    expect(cancelled.status).toBe("cancelled");
    await expect(cancelSchedule(t.db, s.id, actor())).rejects.toMatchObject({
      code: "STATE_CONFLICT",
    });
    const actions = await t.db
      .select({ action: auditEvents.action, details: auditEvents.details })
      .from(auditEvents)
      .where(and(eq(auditEvents.targetId, fleet.id), eq(auditEvents.actorId, admin.id)));
    expect(actions.map((a) => a.action).sort()).toEqual([
      "fleet.schedule",
      "fleet.schedule_cancel",
    ]);
    // A cancelled change never runs.
    await t.db
      .update(fleetSchedules)
      .set({ at: inMinutes(-1) })
      .where(eq(fleetSchedules.id, s.id));
    expect((await runDueSchedules(t.db)).map((r) => r.scheduleId)).not.toContain(s.id);
  });

  it("runs as the fleet.run-schedules pg-boss job", async () => {
    const runner = new JobRunner(t.url, t.db, logger);
    await runner.start(allJobs({ staleSeconds: 60, drivers: {} }));
    try {
      const fleet = await makeFleet(t.db);
      const s = await dueSchedule(fleet.id, 2, 0.1);
      const job = await runJob(runner, "fleet.run-schedules");
      expect(job.state).toBe("completed");
      expect((await scheduleRow(s.id))?.status).toBe("done");
    } finally {
      await runner.stop();
    }
  });
});
