import { integer, pgTable, text } from "drizzle-orm/pg-core";
import { ts } from "./columns";

/**
 * Fixed-window counters shared by every web process (one row per key, e.g. `claim:user:<id>`).
 * Rows of past windows are overwritten in place, so the table stays as small as the set of keys.
 */
export const rateLimits = pgTable("rate_limits", {
  key: text("key").primaryKey(),
  windowStart: ts("window_start").notNull(),
  count: integer("count").notNull(),
});
