import { and, asc, desc, eq, lte, ne, notInArray, sql } from "drizzle-orm";
import type { Db, DbOrTx } from "../db/client";
import { type FleetSchedule, fleetSchedules, fleets } from "../db/schema";
import { audit } from "./audit";
import { DomainError, isDomainError } from "./errors";
import { liveFleet } from "./live-fleet";
import { destroyFleet, scaleFleet } from "./provisioning";
import { type Actor, systemActor } from "./vm-state";
import { setDesiredReady, warmPoolPolicyOf } from "./warm-pool";

/** How far ahead an admin may schedule a change. */
export const MAX_SCHEDULE_AHEAD_DAYS = 366;
/** A due change whose fleet stays busy (another operation running) this long fails instead. */
const BUSY_PATIENCE_MINUTES = 60;

/** Public view of a schedule: what, when, and how it went. */
export type ScheduleView = Pick<
  FleetSchedule,
  | "id"
  | "fleetId"
  | "at"
  | "size"
  | "kind"
  | "status"
  | "operationId"
  | "note"
  | "createdAt"
  | "finishedAt"
>;

const view = {
  id: fleetSchedules.id,
  fleetId: fleetSchedules.fleetId,
  at: fleetSchedules.at,
  size: fleetSchedules.size,
  kind: fleetSchedules.kind,
  status: fleetSchedules.status,
  operationId: fleetSchedules.operationId,
  note: fleetSchedules.note,
  createdAt: fleetSchedules.createdAt,
  finishedAt: fleetSchedules.finishedAt,
};

/**
 * Schedules a fleet to be scaled to `size` at `at` (a workshop's start, its end); on a fleet with
 * a warm pool `size` is its ready count. With `kind: "destroy"` the fleet is destroyed at `at`.
 * Only for fleets the driver can scale (not bring-your-own) and not being destroyed; `at` must be
 * in the future and within a year. Audited as `fleet.schedule`.
 */
export async function scheduleScale(
  db: Db,
  req: { fleetId: string; at: Date; size: number; kind?: "scale" | "destroy"; actor: Actor },
  now = new Date(),
): Promise<ScheduleView> {
  const kind = req.kind ?? "scale";
  if (req.at.getTime() <= now.getTime()) {
    throw new DomainError("INVALID_INPUT", "Pick a time in the future.", { field: "at" });
  }
  if (req.at.getTime() > now.getTime() + MAX_SCHEDULE_AHEAD_DAYS * 86_400_000) {
    throw new DomainError("INVALID_INPUT", "Pick a time within a year.", { field: "at" });
  }
  return db.transaction(async (tx) => {
    const fleet = await liveFleet(tx, req.fleetId);
    if (fleet.driver === "byo") {
      throw new DomainError(
        "INVALID_INPUT",
        `Fleet ${fleet.name} is bring-your-own: machines join it by enrolling, it cannot be scaled.`,
      );
    }
    const [row] = await tx
      .insert(fleetSchedules)
      .values({
        fleetId: req.fleetId,
        at: req.at,
        size: kind === "destroy" ? 0 : req.size,
        kind,
        createdBy: req.actor.kind === "user" ? req.actor.id : null,
      })
      .returning(view);
    if (!row) throw new Error("schedule insert returned nothing");
    await audit(
      tx,
      req.actor,
      "fleet.schedule",
      { kind: "fleet", id: req.fleetId },
      { scheduleId: row.id, at: req.at.toISOString(), size: row.size, kind },
    );
    return row;
  });
}

/** A fleet's schedules: every pending one, soonest first, then the last 10 finished. */
export async function listSchedules(db: DbOrTx, fleetId: string): Promise<ScheduleView[]> {
  const [pending, finished] = await Promise.all([
    db
      .select(view)
      .from(fleetSchedules)
      .where(and(eq(fleetSchedules.fleetId, fleetId), eq(fleetSchedules.status, "pending")))
      .orderBy(asc(fleetSchedules.at)),
    db
      .select(view)
      .from(fleetSchedules)
      .where(and(eq(fleetSchedules.fleetId, fleetId), ne(fleetSchedules.status, "pending")))
      .orderBy(desc(fleetSchedules.at))
      .limit(10),
  ]);
  return [...pending, ...finished];
}

/** Cancels a pending schedule (audited as `fleet.schedule_cancel`); a finished one cannot be. */
export async function cancelSchedule(
  db: Db,
  scheduleId: string,
  actor: Actor,
): Promise<ScheduleView> {
  return db.transaction(async (tx) => {
    const [s] = await tx
      .select(view)
      .from(fleetSchedules)
      .where(eq(fleetSchedules.id, scheduleId))
      .for("update");
    if (!s) throw new DomainError("NOT_FOUND", "No such scheduled change.", { scheduleId });
    if (s.status !== "pending") {
      throw new DomainError("STATE_CONFLICT", `This scheduled change is already ${s.status}.`, {
        status: s.status,
      });
    }
    const [row] = await tx
      .update(fleetSchedules)
      .set({ status: "cancelled", finishedAt: sql`now()` })
      .where(eq(fleetSchedules.id, scheduleId))
      .returning(view);
    await audit(
      tx,
      actor,
      "fleet.schedule_cancel",
      { kind: "fleet", id: s.fleetId },
      { scheduleId, at: s.at.toISOString(), size: s.size },
    );
    return row as ScheduleView;
  });
}

export type ScheduleRun = {
  scheduleId: string;
  outcome: "done" | "waiting" | "failed" | "superseded";
};

/**
 * Starts the scale operation of every due schedule (the worker runs this every 15 s). Per fleet
 * only the latest due change counts: earlier ones that were missed (the worker was down) are
 * superseded, not replayed. A fleet busy with another operation waits, up to an hour past the
 * due time, then the change fails with the reason; a fleet destroyed meanwhile fails it at once.
 * Rows are locked with SKIP LOCKED, so several workers share the work without doing it twice.
 */
export async function runDueSchedules(db: Db, now = new Date()): Promise<ScheduleRun[]> {
  const runs: ScheduleRun[] = [];
  const waiting: string[] = [];
  for (;;) {
    const run = await db.transaction(async (tx): Promise<ScheduleRun | null> => {
      const [s] = await tx
        .select(view)
        .from(fleetSchedules)
        .where(
          and(
            eq(fleetSchedules.status, "pending"),
            lte(fleetSchedules.at, now),
            waiting.length ? notInArray(fleetSchedules.id, waiting) : undefined,
          ),
        )
        .orderBy(desc(fleetSchedules.at))
        .limit(1)
        .for("update", { skipLocked: true });
      if (!s) return null;
      // The latest due change of its fleet wins; earlier due ones are history.
      const superseded = await tx
        .update(fleetSchedules)
        .set({
          status: "superseded",
          finishedAt: sql`now()`,
          note: "A later scheduled change replaced it.",
        })
        .where(
          and(
            eq(fleetSchedules.fleetId, s.fleetId),
            eq(fleetSchedules.status, "pending"),
            lte(fleetSchedules.at, s.at),
            ne(fleetSchedules.id, s.id),
            // A scheduled destruction still happens, whatever size was asked for after it.
            ne(fleetSchedules.kind, "destroy"),
          ),
        )
        .returning({ id: fleetSchedules.id });
      for (const x of superseded) runs.push({ scheduleId: x.id, outcome: "superseded" });

      const finish = async (
        status: "done" | "failed",
        fields: { operationId?: string; note?: string },
      ) => {
        await tx
          .update(fleetSchedules)
          .set({ status, finishedAt: sql`now()`, ...fields })
          .where(eq(fleetSchedules.id, s.id));
        return { scheduleId: s.id, outcome: status } as const;
      };
      const [fleet] = await tx
        .select({ name: fleets.name, status: fleets.status, warmPool: fleets.warmPool })
        .from(fleets)
        .where(eq(fleets.id, s.fleetId));
      if (!fleet || fleet.status === "destroyed" || fleet.status === "destroying") {
        return finish("failed", {
          note: `The fleet was ${fleet?.status ?? "deleted"} before it was due.`,
        });
      }
      try {
        if (s.kind === "destroy") {
          const { operation } = await destroyFleet(tx, s.fleetId, systemActor);
          return finish("done", { operationId: operation.id });
        }
        if (warmPoolPolicyOf(fleet.warmPool)) {
          // The warm-pool reconciler turns the ready count into a size (and its operation).
          const policy = await setDesiredReady(tx, {
            fleetId: s.fleetId,
            desiredReady: s.size,
            actor: systemActor,
          });
          return finish("done", {
            note:
              policy.desiredReady === s.size
                ? `Ready count set to ${s.size}.`
                : `Ready count set to ${policy.desiredReady} (the pool's maximum size).`,
          });
        }
        const { operation } = await scaleFleet(tx, s.fleetId, s.size, systemActor);
        return finish("done", { operationId: operation.id });
      } catch (e) {
        if (!isDomainError(e)) throw e;
        // The fleet is live (checked above), so a conflict is its single operation slot being
        // taken: wait for it, like below. Anything else fails the change with the reason.
        if (e.code !== "STATE_CONFLICT") return finish("failed", { note: e.message });
      }
      if (now.getTime() - s.at.getTime() > BUSY_PATIENCE_MINUTES * 60_000) {
        return finish("failed", {
          note: `The fleet was busy with another operation for ${BUSY_PATIENCE_MINUTES} minutes after the change was due.`,
        });
      }
      waiting.push(s.id);
      return { scheduleId: s.id, outcome: "waiting" };
    });
    if (!run) return runs;
    runs.push(run);
  }
}
