import { boolean, index, pgTable, text, uuid } from "drizzle-orm/pg-core";
import { createdAt, id, ts } from "./columns";
import { vms } from "./vms";

/**
 * Per-VM agent tokens. Only the SHA-256 of the secret is stored.
 *
 * A `pending` token was handed out but has not been used yet (a rotation, or a token written into
 * a VM's user data). Until it is used the VM's other tokens keep working, so a reply lost on the
 * way never locks an agent out; its first use revokes every other token of the VM
 * (server/auth/agent-tokens.ts).
 */
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
    pending: boolean("pending").notNull().default(false),
  },
  (t) => [index("agent_credentials_vm_idx").on(t.vmId)],
);

export type AgentCredential = typeof agentCredentials.$inferSelect;
