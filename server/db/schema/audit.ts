import { bigint, index, jsonb, pgEnum, pgTable, text } from "drizzle-orm/pg-core";
import { ts } from "./columns";

export const actorKind = pgEnum("actor_kind", ["user", "agent", "system"]);
export type ActorKind = (typeof actorKind.enumValues)[number];

export const auditEvents = pgTable(
  "audit_events",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    at: ts("at").notNull().defaultNow(),
    actorKind: actorKind("actor_kind").notNull(),
    actorId: text("actor_id"),
    action: text("action").notNull(),
    targetKind: text("target_kind").notNull(),
    targetId: text("target_id"),
    fromState: text("from_state"),
    toState: text("to_state"),
    details: jsonb("details").$type<Record<string, unknown>>().notNull().default({}),
    ip: text("ip"),
  },
  (t) => [
    index("audit_target_idx").on(t.targetKind, t.targetId, t.at),
    index("audit_at_idx").on(t.at),
    // The audit page's filters by action and by actor, newest first: without these, a rare
    // action or a quiet actor means walking the whole log backwards by time.
    index("audit_action_at_idx").on(t.action, t.at),
    index("audit_actor_at_idx").on(t.actorId, t.at),
  ],
);

export type AuditEvent = typeof auditEvents.$inferSelect;
