import { index, integer, pgTable, text, uniqueIndex, uuid } from "drizzle-orm/pg-core";
import { createdAt, id } from "./columns";
import { users } from "./users";

/** A researcher's SSH public keys, installed on the VM they claim and removed on release. */
export const sshKeys = pgTable(
  "ssh_keys",
  {
    id: id(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    /** The researcher's name for it ("laptop"). */
    label: text("label").notNull(),
    /** ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa. */
    algorithm: text("algorithm").notNull(),
    /** The key blob, base64, exactly as in authorized_keys; the comment is not kept. */
    publicKey: text("public_key").notNull(),
    /** "SHA256:..." as `ssh-keygen -lf` prints it. */
    fingerprint: text("fingerprint").notNull(),
    bits: integer("bits").notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex("ssh_keys_user_fingerprint_key").on(t.userId, t.fingerprint),
    index("ssh_keys_user_idx").on(t.userId),
  ],
);

export type SshKey = typeof sshKeys.$inferSelect;
