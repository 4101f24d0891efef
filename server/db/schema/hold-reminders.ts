import { pgEnum, pgTable, primaryKey, uuid } from "drizzle-orm/pg-core";
import { ts } from "./columns";
import { users } from "./users";
import { vms } from "./vms";

export const reminderKind = pgEnum("reminder_kind", ["hold", "idle"]);
export type ReminderKind = (typeof reminderKind.enumValues)[number];

/**
 * One row per reminder email sent (or being sent) before a limit takes a held VM back: at most one
 * per assignment, limit and period (`since`: the claim plus the hold's extended minutes for the
 * hold limit, so an extended hold is reminded of again before its new end; the start of idleness
 * for the idle limit, so a researcher who comes back and goes idle again is reminded again).
 * Written before the mail goes out and deleted if it fails, so two workers never both send it.
 */
export const holdReminders = pgTable(
  "hold_reminders",
  {
    assignmentId: uuid("assignment_id").notNull(),
    kind: reminderKind("kind").notNull(),
    since: ts("since").notNull(),
    vmId: uuid("vm_id")
      .notNull()
      .references(() => vms.id, { onDelete: "cascade" }),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    /** When the limit was due to release the VM, as the mail said. */
    releaseAt: ts("release_at").notNull(),
    sentAt: ts("sent_at").notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.assignmentId, t.kind, t.since] })],
);
