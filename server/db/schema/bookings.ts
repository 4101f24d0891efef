import { sql } from "drizzle-orm";
import { check, index, integer, pgEnum, pgTable, text, uuid } from "drizzle-orm/pg-core";
import { createdAt, id, ts } from "./columns";
import { fleets } from "./fleets";
import { users } from "./users";
import { vms } from "./vms";

/**
 * booked: waiting for its start (a VM may already be set aside for it, `vm_id`);
 * active: the booker claimed the VM; done: ended; no_show: the booker did not come within the
 * grace period (the VM went back to the pool); cancelled: by the booker or an admin.
 */
export const bookingStatus = pgEnum("booking_status", [
  "booked",
  "active",
  "no_show",
  "cancelled",
  "done",
]);
export type BookingStatus = (typeof bookingStatus.enumValues)[number];

/** Statuses that hold a seat (the exclusion constraints apply to these only). */
export const LIVE_BOOKING_STATUSES = ["booked", "active"] as const satisfies BookingStatus[];

/**
 * One researcher's slot on a fleet: a seat (1..the fleet's bookable seats) for [starts_at,
 * ends_at). Overlaps are refused by the database, not by code (migration
 * 0023_booking_exclusion.sql): `bookings_seat_no_overlap` — one live booking per seat and time
 * (EXCLUDE USING gist (fleet_id =, seat =, tstzrange &&)); `bookings_user_no_overlap` — a
 * researcher holds one VM at a time, so never two live bookings at once.
 */
export const bookings = pgTable(
  "bookings",
  {
    id: id(),
    fleetId: uuid("fleet_id")
      .notNull()
      .references(() => fleets.id, { onDelete: "cascade" }),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    seat: integer("seat").notNull(),
    startsAt: ts("starts_at").notNull(),
    endsAt: ts("ends_at").notNull(),
    status: bookingStatus("status").notNull().default("booked"),
    /** The VM set aside for (booked) or claimed by (active) the booker. */
    vmId: uuid("vm_id").references(() => vms.id, { onDelete: "set null" }),
    /** When the VM was set aside. */
    heldAt: ts("held_at"),
    /** A workshop's name on an admin's block booking. */
    label: text("label"),
    createdBy: uuid("created_by").references(() => users.id, { onDelete: "set null" }),
    createdAt: createdAt(),
    /** When it left booked/active. */
    endedAt: ts("ended_at"),
  },
  (t) => [
    check("bookings_range_valid", sql`${t.endsAt} > ${t.startsAt}`),
    check("bookings_seat_positive", sql`${t.seat} >= 1`),
    // The activation job's scans: live bookings of a fleet by start.
    index("bookings_live_idx").on(t.fleetId, t.startsAt).where(sql`status IN ('booked', 'active')`),
    index("bookings_user_idx").on(t.userId, t.startsAt),
  ],
);

export type Booking = typeof bookings.$inferSelect;
