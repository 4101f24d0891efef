import { pgEnum, pgTable, text, uuid } from "drizzle-orm/pg-core";
import { createdAt, ts } from "./columns";
import { users } from "./users";
import { vms } from "./vms";

export const handoffStatus = pgEnum("handoff_status", ["pending", "succeeded", "failed"]);

/**
 * The latest remote-desktop hand-off request of a VM's holder (one row per VM). The setup code
 * and PIN are kept only sealed (AES-256-GCM) and only until the agent has used them: the
 * acknowledgement, a new request, or the release clears `sealed`.
 */
export const crdHandoffs = pgTable("crd_handoffs", {
  vmId: uuid("vm_id")
    .primaryKey()
    .references(() => vms.id, { onDelete: "cascade" }),
  /** New on every submission; the agent's acknowledgement names it. */
  requestId: uuid("request_id").notNull(),
  assignmentId: uuid("assignment_id").notNull(),
  userId: uuid("user_id")
    .notNull()
    .references(() => users.id, { onDelete: "cascade" }),
  status: handoffStatus("status").notNull().default("pending"),
  /** Sealed {code, pin}; null once used. Never selected for anyone but the VM's agent. */
  sealed: text("sealed"),
  /** Why it failed, from the agent (shown to the researcher). */
  error: text("error"),
  createdAt: createdAt(),
  finishedAt: ts("finished_at"),
});

export type CrdHandoff = typeof crdHandoffs.$inferSelect;
