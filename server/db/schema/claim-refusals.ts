import { pgTable, text, uuid } from "drizzle-orm/pg-core";
import { ts } from "./columns";
import { fleets } from "./fleets";
import { users } from "./users";

/**
 * A researcher's latest claim refused for lack of a free VM (NO_CAPACITY), one row per researcher:
 * LabLink's notion of "someone is waiting" for a fleet, which refuses hold extensions there
 * (server/domain/hold-extensions.ts). `fleetId` / `instanceType` are the claim's filters; both
 * null: any fleet would have done.
 */
export const claimRefusals = pgTable("claim_refusals", {
  userId: uuid("user_id")
    .primaryKey()
    .references(() => users.id, { onDelete: "cascade" }),
  fleetId: uuid("fleet_id").references(() => fleets.id, { onDelete: "cascade" }),
  instanceType: text("instance_type"),
  at: ts("at").notNull().defaultNow(),
});
