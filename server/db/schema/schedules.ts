import { sql } from "drizzle-orm";
import { index, integer, pgEnum, pgTable, text, uuid } from "drizzle-orm/pg-core";
import { createdAt, id, ts } from "./columns";
import { fleets } from "./fleets";
import { operations } from "./operations";
import { users } from "./users";

export const scheduleStatus = pgEnum("schedule_status", [
  "pending",
  "done",
  "cancelled",
  "superseded",
  "failed",
]);
export type ScheduleStatus = (typeof scheduleStatus.enumValues)[number];

/**
 * A fleet size an admin asked for at a future time (a workshop's start and end): at `at` the
 * worker requests the scale operation, as if the admin had pressed Scale then.
 */
export const fleetSchedules = pgTable(
  "fleet_schedules",
  {
    id: id(),
    fleetId: uuid("fleet_id")
      .notNull()
      .references(() => fleets.id, { onDelete: "cascade" }),
    at: ts("at").notNull(),
    size: integer("size").notNull(),
    status: scheduleStatus("status").notNull().default("pending"),
    /** The scale operation it started (status done). */
    operationId: uuid("operation_id").references(() => operations.id, { onDelete: "set null" }),
    /** Why it failed or was superseded, for the admin. */
    note: text("note"),
    createdBy: uuid("created_by").references(() => users.id, { onDelete: "set null" }),
    createdAt: createdAt(),
    finishedAt: ts("finished_at"),
  },
  (t) => [
    index("fleet_schedules_due_idx").on(t.at).where(sql`status = 'pending'`),
    index("fleet_schedules_fleet_idx").on(t.fleetId, t.at),
  ],
);

export type FleetSchedule = typeof fleetSchedules.$inferSelect;
