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

export const scheduleKind = pgEnum("schedule_kind", ["scale", "destroy"]);
export type ScheduleKind = (typeof scheduleKind.enumValues)[number];

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
    /** `destroy`: the fleet is destroyed at `at` (size is then unused). */
    kind: scheduleKind("kind").notNull().default("scale"),
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

/**
 * A weekly (or daily...) slot: at each occurrence's start the fleet gets `size` (its ready count
 * when it has a warm pool, else its total), at the occurrence's end `fallbackSize`. The rule is an
 * RRULE without DTSTART; `startTime`/`endTime` are wall-clock times in `timezone`, so a 09:00 slot
 * stays 09:00 local across a DST change.
 */
export const fleetRecurringSchedules = pgTable(
  "fleet_recurring_schedules",
  {
    id: id(),
    fleetId: uuid("fleet_id")
      .notNull()
      .references(() => fleets.id, { onDelete: "cascade" }),
    rrule: text("rrule").notNull(),
    timezone: text("timezone").notNull(),
    startTime: text("start_time").notNull(),
    endTime: text("end_time").notNull(),
    size: integer("size").notNull(),
    fallbackSize: integer("fallback_size").notNull().default(0),
    /** The first day the rule may fire (YYYY-MM-DD in `timezone`). */
    startDate: text("start_date").notNull(),
    /** The last boundary (an occurrence's start or end) applied, so each is applied once. */
    lastBoundaryAt: ts("last_boundary_at"),
    /** The size applied at that boundary. */
    lastAppliedSize: integer("last_applied_size"),
    note: text("note"),
    createdBy: uuid("created_by").references(() => users.id, { onDelete: "set null" }),
    createdAt: createdAt(),
  },
  (t) => [index("fleet_recurring_schedules_fleet_idx").on(t.fleetId)],
);

export type FleetRecurringSchedule = typeof fleetRecurringSchedules.$inferSelect;
