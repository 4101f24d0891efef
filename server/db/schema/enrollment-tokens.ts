import { sql } from "drizzle-orm";
import { check, index, integer, pgTable, text, uuid } from "drizzle-orm/pg-core";
import { createdAt, id, ts } from "./columns";
import { fleets } from "./fleets";
import { users } from "./users";

/**
 * Enrollment tokens let an agent on a bring-your-own machine create its own VM record in a fleet.
 * Only SHA-256 of the secret is stored; `uses < max_uses`, expiry and revocation are checked in
 * the one UPDATE that spends a use, so two agents racing for the last use cannot both win.
 */
export const enrollmentTokens = pgTable(
  "enrollment_tokens",
  {
    id: id(),
    fleetId: uuid("fleet_id")
      .notNull()
      .references(() => fleets.id, { onDelete: "cascade" }),
    label: text("label"),
    tokenHash: text("token_hash").notNull(),
    maxUses: integer("max_uses").notNull().default(1),
    uses: integer("uses").notNull().default(0),
    expiresAt: ts("expires_at").notNull(),
    revokedAt: ts("revoked_at"),
    createdBy: uuid("created_by").references(() => users.id, { onDelete: "set null" }),
    createdAt: createdAt(),
  },
  (t) => [
    index("enrollment_tokens_fleet_idx").on(t.fleetId),
    check("enrollment_tokens_uses_within_max", sql`uses >= 0 AND uses <= max_uses`),
  ],
);

export type EnrollmentToken = typeof enrollmentTokens.$inferSelect;
