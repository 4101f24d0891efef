import { sql } from "drizzle-orm";
import { boolean, index, pgTable, text, uuid } from "drizzle-orm/pg-core";
import { createdAt, ts } from "./columns";
import { users } from "./users";
import { vms } from "./vms";

/**
 * One browser-desktop relay: a viewer's WebSocket waiting for (then paired with) the VM agent's
 * outbound WebSocket. The row is the agent's `desktop` command while `connectedAt` is null, the
 * holder's "an admin is viewing" banner while an admin's row is open, and the record of who looked.
 */
export const desktopSessions = pgTable(
  "desktop_sessions",
  {
    /** The relay id the agent connects back with. */
    id: uuid("id").primaryKey(),
    vmId: uuid("vm_id")
      .notNull()
      .references(() => vms.id, { onDelete: "cascade" }),
    /** The assignment the relay is authorised for; it closes when that assignment ends. */
    assignmentId: uuid("assignment_id").notNull(),
    viewerId: uuid("viewer_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    /** The viewer is an admin, not the holder (the holder sees a banner while it is open). */
    admin: boolean("admin").notNull().default(false),
    createdAt: createdAt(),
    /** The agent's socket arrived and the two were paired. */
    connectedAt: ts("connected_at"),
    closedAt: ts("closed_at"),
    closeReason: text("close_reason"),
  },
  (t) => [index("desktop_sessions_open_idx").on(t.vmId).where(sql`${t.closedAt} IS NULL`)],
);

export type DesktopSession = typeof desktopSessions.$inferSelect;
