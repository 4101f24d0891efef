import { sql } from "drizzle-orm";
import {
  bigint,
  index,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  primaryKey,
  text,
  uniqueIndex,
  uuid,
} from "drizzle-orm/pg-core";
import { createdAt, id, ts } from "./columns";
import { fleets } from "./fleets";
import { users } from "./users";
import { vms } from "./vms";

export const operationStatus = pgEnum("operation_status", [
  "queued",
  "running",
  "succeeded",
  "failed",
  "cancelled",
]);
export type OperationStatus = (typeof operationStatus.enumValues)[number];

export const operationKind = pgEnum("operation_kind", [
  "fleet.create",
  "fleet.scale",
  "fleet.destroy",
  "vm.reboot",
  "vm.terminate",
  /** Terminate one VM and create a new one in its place (released VMs of root fleets). */
  "vm.replace",
]);
export type OperationKind = (typeof operationKind.enumValues)[number];

/** Progress a driver reports (Terraform: resources done of resources planned). */
export type OperationProgress = { done: number; total: number };

/**
 * A user-visible provisioning request and its run. The worker holds a lease while it runs one;
 * an expired lease means the worker died, and the sweeper retries or fails the operation.
 */
export const operations = pgTable(
  "operations",
  {
    id: id(),
    fleetId: uuid("fleet_id")
      .notNull()
      .references(() => fleets.id),
    vmId: uuid("vm_id").references(() => vms.id),
    kind: operationKind("kind").notNull(),
    status: operationStatus("status").notNull().default("queued"),
    requestedBy: uuid("requested_by").references(() => users.id),
    /** What was asked (e.g. the new size); never secrets. */
    params: jsonb("params").$type<Record<string, unknown>>().notNull().default({}),
    error: text("error"),
    attempts: integer("attempts").notNull().default(0),
    maxAttempts: integer("max_attempts").notNull().default(3),
    progress: jsonb("progress").$type<OperationProgress | null>(),
    /** Lines ever appended; the log keeps the first and last ones when this grows large. */
    logCount: bigint("log_count", { mode: "number" }).notNull().default(0),
    leaseOwner: text("lease_owner"),
    leaseExpiresAt: ts("lease_expires_at"),
    cancelRequestedAt: ts("cancel_requested_at"),
    cancelRequestedBy: uuid("cancel_requested_by").references(() => users.id),
    createdAt: createdAt(),
    startedAt: ts("started_at"),
    finishedAt: ts("finished_at"),
  },
  (t) => [
    // One operation in flight per fleet is a database guarantee: a second request while one is
    // queued or running hits this index and is refused with a message naming the first.
    uniqueIndex("operations_one_active_per_fleet")
      .on(t.fleetId)
      .where(sql`status IN ('queued', 'running')`),
    index("operations_fleet_idx").on(t.fleetId, t.createdAt),
    index("operations_created_idx").on(t.createdAt),
    index("operations_running_lease_idx").on(t.leaseExpiresAt).where(sql`status = 'running'`),
  ],
);

export type Operation = typeof operations.$inferSelect;

/** Append-only log lines of an operation; `seq` is the cursor the UI polls with. */
export const operationLogs = pgTable(
  "operation_logs",
  {
    operationId: uuid("operation_id")
      .notNull()
      .references(() => operations.id, { onDelete: "cascade" }),
    seq: bigint("seq", { mode: "number" }).notNull(),
    at: ts("at").notNull().defaultNow(),
    level: text("level").notNull().default("info"),
    line: text("line").notNull(),
  },
  (t) => [primaryKey({ columns: [t.operationId, t.seq] })],
);

export type OperationLogLine = typeof operationLogs.$inferSelect;
