import { index, pgTable, primaryKey, text, uuid } from "drizzle-orm/pg-core";
import { createdAt, id } from "./columns";
import { fleets } from "./fleets";
import { users } from "./users";

/** A set of users (a lab, a course) that fleets can be restricted to. */
export const groups = pgTable("groups", {
  id: id(),
  name: text("name").notNull().unique(),
  description: text("description"),
  createdAt: createdAt(),
});

export const groupMembers = pgTable(
  "group_members",
  {
    groupId: uuid("group_id")
      .notNull()
      .references(() => groups.id, { onDelete: "cascade" }),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    createdAt: createdAt(),
  },
  (t) => [
    primaryKey({ columns: [t.groupId, t.userId] }),
    index("group_members_user_idx").on(t.userId),
  ],
);

/**
 * A fleet with rows here may be claimed only by members of those groups; a fleet without rows is
 * open to every signed-in researcher.
 */
export const fleetGroups = pgTable(
  "fleet_groups",
  {
    fleetId: uuid("fleet_id")
      .notNull()
      .references(() => fleets.id, { onDelete: "cascade" }),
    groupId: uuid("group_id")
      .notNull()
      .references(() => groups.id, { onDelete: "cascade" }),
  },
  (t) => [
    primaryKey({ columns: [t.fleetId, t.groupId] }),
    index("fleet_groups_group_idx").on(t.groupId),
  ],
);

export type Group = typeof groups.$inferSelect;
