import { index, pgEnum, pgTable, text, uuid } from "drizzle-orm/pg-core";
import { createdAt, id, ts } from "./columns";
import { users } from "./users";

/** `read`: queries only (reports, lists, logs); `admin`: everything the admin may do. */
export const apiTokenScope = pgEnum("api_token_scope", ["read", "admin"]);
export type ApiTokenScope = (typeof apiTokenScope.enumValues)[number];

/**
 * Personal API tokens for automation (the `lablink` CLI, scripts). A token acts as its owner, whose
 * role is read from `users` on every call: demoting the owner disables their tokens at once. Only
 * SHA-256 of the secret is stored; the token itself is shown once, when it is created.
 */
export const apiTokens = pgTable(
  "api_tokens",
  {
    id: id(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    scope: apiTokenScope("scope").notNull(),
    tokenHash: text("token_hash").notNull(),
    expiresAt: ts("expires_at").notNull(),
    /** Written at most once a minute per token, so a busy script does not write on every call. */
    lastUsedAt: ts("last_used_at"),
    revokedAt: ts("revoked_at"),
    createdAt: createdAt(),
  },
  (t) => [index("api_tokens_user_idx").on(t.userId)],
);

export type ApiToken = typeof apiTokens.$inferSelect;
