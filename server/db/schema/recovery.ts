import { integer, pgEnum, pgTable, text, uuid } from "drizzle-orm/pg-core";
import { ts } from "./columns";
import { operations } from "./operations";
import { vms } from "./vms";

export const recoveryStep = pgEnum("recovery_step", ["warm_reboot", "cold_reboot", "replace"]);
export type RecoveryStep = (typeof recoveryStep.enumValues)[number];

/**
 * Automatic recovery of one VM that is unhealthy, silent or stuck (server/domain/recovery.ts):
 * one row per VM while an episode lasts, deleted when the VM is back in service. The whole
 * history stays in the audit log (`recovery.*` actions); this row is what the next run needs.
 */
export const vmRecoveries = pgTable("vm_recoveries", {
  vmId: uuid("vm_id")
    .primaryKey()
    .references(() => vms.id, { onDelete: "cascade" }),
  /** When recovery first saw the VM in trouble (the grace period counts from here). */
  detectedAt: ts("detected_at").notNull(),
  /** What was wrong when last seen: unhealthy, silent, stuck_booting or stuck_rebooting. */
  problem: text("problem").notNull(),
  /** The last step taken (null: none yet) and how many times in a row. */
  step: recoveryStep("step"),
  stepAttempts: integer("step_attempts").notNull().default(0),
  totalAttempts: integer("total_attempts").notNull().default(0),
  lastAttemptAt: ts("last_attempt_at"),
  /** The operation of the last cold reboot or replace, when there was one. */
  operationId: uuid("operation_id").references(() => operations.id, { onDelete: "set null" }),
  /** A held VM: when its holder was told a reboot is coming, and who that was. */
  noticeAt: ts("notice_at"),
  noticeHolderId: uuid("notice_holder_id"),
  /** What the holder was told comes next: a reboot (the VM comes back) or not (replace, give up). */
  noticeNext: text("notice_next"),
});

export type VmRecovery = typeof vmRecoveries.$inferSelect;
