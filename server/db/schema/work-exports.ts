import { bigint, index, pgEnum, pgTable, text, uuid } from "drizzle-orm/pg-core";
import { createdAt, ts } from "./columns";
import { users } from "./users";
import { vms } from "./vms";

export const workExportStatus = pgEnum("work_export_status", [
  /** Asked for; the agent has not started sending yet. */
  "pending",
  "streaming",
  "done",
  /** The agent failed, or the folder was over the fleet's limit (`error` says which). */
  "failed",
  /** The researcher went away, the VM was released, or nothing came in time. */
  "cancelled",
]);
export type WorkExportStatus = (typeof workExportStatus.enumValues)[number];

/**
 * One download of a researcher's work folder (server/domain/work-export.ts). The id is the
 * export's secret: random (UUID v4), given only to the VM's agent, and good for one upload.
 */
export const workExports = pgTable(
  "work_exports",
  {
    id: uuid("id").primaryKey(),
    vmId: uuid("vm_id")
      .notNull()
      .references(() => vms.id, { onDelete: "cascade" }),
    assignmentId: uuid("assignment_id").notNull(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    status: workExportStatus("status").notNull().default("pending"),
    /** The folder's size as the agent measured it, before compression. */
    folderBytes: bigint("folder_bytes", { mode: "number" }),
    /** Compressed bytes passed on to the researcher. */
    bytes: bigint("bytes", { mode: "number" }).notNull().default(0),
    error: text("error"),
    createdAt: createdAt(),
    finishedAt: ts("finished_at"),
  },
  (t) => [index("work_exports_vm_idx").on(t.vmId, t.status)],
);

export type WorkExport = typeof workExports.$inferSelect;

export const workArchiveStatus = pgEnum("work_archive_status", ["uploaded", "failed"]);

/**
 * A work folder uploaded to S3 on release (server/domain/work-archive.ts), one per assignment,
 * as the agent reported it. The researcher's profile links to it until `expires_at`; the bucket's
 * lifecycle rule deletes the object.
 */
export const workArchives = pgTable(
  "work_archives",
  {
    assignmentId: uuid("assignment_id").primaryKey(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    vmId: uuid("vm_id").references(() => vms.id, { onDelete: "set null" }),
    vmName: text("vm_name").notNull(),
    bucket: text("bucket").notNull(),
    region: text("region").notNull(),
    key: text("key").notNull(),
    status: workArchiveStatus("status").notNull(),
    bytes: bigint("bytes", { mode: "number" }),
    error: text("error"),
    createdAt: createdAt(),
    expiresAt: ts("expires_at").notNull(),
  },
  (t) => [index("work_archives_user_idx").on(t.userId, t.expiresAt)],
);

export type WorkArchive = typeof workArchives.$inferSelect;
