import { sql } from "drizzle-orm";
import { bigint, index, jsonb, pgEnum, pgTable, primaryKey, text, uuid } from "drizzle-orm/pg-core";
import { ts } from "./columns";
import { vms } from "./vms";

export const vmLogSource = pgEnum("vm_log_source", ["agent", "cloud-init", "container"]);
export type VmLogSource = (typeof vmLogSource.enumValues)[number];

export const vmLogLevel = pgEnum("vm_log_level", ["debug", "info", "warn", "error"]);
export type VmLogLevel = (typeof vmLogLevel.enumValues)[number];

/** Log lines shipped by a VM's agent (agent.logs): bounded per VM, read by cursor (id). */
export const vmLogs = pgTable(
  "vm_logs",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    vmId: uuid("vm_id")
      .notNull()
      .references(() => vms.id, { onDelete: "cascade" }),
    bootId: text("boot_id"),
    /** When the line was written on the VM (agent clock). */
    at: ts("at").notNull(),
    /** When the server stored it. */
    receivedAt: ts("received_at").notNull().defaultNow(),
    source: vmLogSource("source").notNull(),
    level: vmLogLevel("level").notNull().default("info"),
    message: text("message").notNull(),
  },
  (t) => [index("vm_logs_vm_idx").on(t.vmId, t.id)],
);
export type VmLog = typeof vmLogs.$inferSelect;

/** A compact GPU reading kept for charts (one per GPU in a sample). */
export type GpuSamplePoint = {
  index: number;
  utilizationPct: number | null;
  memoryUsedMiB: number | null;
  memoryTotalMiB: number | null;
  temperatureC: number | null;
  powerDrawW: number | null;
};

/** GPU readings over time for the VM detail charts; coalesced (at most one per VM per interval). */
export const gpuSamples = pgTable(
  "gpu_samples",
  {
    vmId: uuid("vm_id")
      .notNull()
      .references(() => vms.id, { onDelete: "cascade" }),
    at: ts("at").notNull().default(sql`now()`),
    gpus: jsonb("gpus").$type<GpuSamplePoint[]>().notNull(),
  },
  (t) => [primaryKey({ columns: [t.vmId, t.at] }), index("gpu_samples_at_idx").on(t.at)],
);
export type GpuSample = typeof gpuSamples.$inferSelect;
