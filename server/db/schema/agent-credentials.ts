import { index, pgTable, text, uuid } from "drizzle-orm/pg-core";
import { createdAt, id, ts } from "./columns";
import { vms } from "./vms";

/** Per-VM agent tokens. Only the SHA-256 of the secret is stored. */
export const agentCredentials = pgTable(
  "agent_credentials",
  {
    id: id(),
    vmId: uuid("vm_id")
      .notNull()
      .references(() => vms.id, { onDelete: "cascade" }),
    tokenHash: text("token_hash").notNull(),
    createdAt: createdAt(),
    revokedAt: ts("revoked_at"),
    lastUsedAt: ts("last_used_at"),
  },
  (t) => [index("agent_credentials_vm_idx").on(t.vmId)],
);

export type AgentCredential = typeof agentCredentials.$inferSelect;
