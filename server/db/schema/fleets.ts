import { boolean, integer, jsonb, pgEnum, pgTable, text } from "drizzle-orm/pg-core";
import { createdAt, id, ts } from "./columns";

export const fleetDriver = pgEnum("fleet_driver", ["local", "terraform", "byo"]);
export type FleetDriverName = (typeof fleetDriver.enumValues)[number];

export const fleetStatus = pgEnum("fleet_status", [
  "creating",
  "active",
  "scaling",
  "destroying",
  "destroyed",
  "failed",
]);
export type FleetStatus = (typeof fleetStatus.enumValues)[number];

export const fleets = pgTable("fleets", {
  id: id(),
  name: text("name").notNull().unique(),
  driver: fleetDriver("driver").notNull(),
  instanceType: text("instance_type").notNull(),
  gpuModel: text("gpu_model"),
  gpuCount: integer("gpu_count").notNull().default(1),
  region: text("region"),
  image: text("image"),
  desiredSize: integer("desired_size").notNull().default(0),
  /** How long a researcher may hold a VM of this fleet; null = no limit. */
  maxHoldMinutes: integer("max_hold_minutes"),
  /**
   * A held VM idle this long (its agent reports no session, research process or GPU activity) is
   * released; counted from the later of the claim and the start of idleness. Null = never.
   */
  idleReleaseMinutes: integer("idle_release_minutes"),
  /**
   * Each researcher may use at most this many GPU-hours of this fleet in any 7 days (hours held ×
   * GPUs per VM, from the audit log); a claim over it is refused. Null = no quota.
   */
  gpuHoursPerWeek: integer("gpu_hours_per_week"),
  /**
   * "Extend" on My VM adds this many minutes to a hold (only with a hold limit); null: holds of
   * this fleet cannot be extended (server/domain/hold-extensions.ts).
   */
  holdExtendMinutes: integer("hold_extend_minutes"),
  /** How many times one hold may be extended. */
  maxHoldExtensions: integer("max_hold_extensions").notNull().default(0),
  /** The longest a hold may last with its extensions, from the claim; null: only the count limits it. */
  maxTotalHoldMinutes: integer("max_total_hold_minutes"),
  /**
   * Researchers get sudo and the docker group on this fleet's VMs. A root holder can defeat any
   * wipe, so a released VM is terminated and replaced by a new one instead (docs/security.md).
   */
  rootForResearchers: boolean("root_for_researchers").notNull().default(false),
  /**
   * "LabLink client image" compatibility: the fleet's image is an original LabLink client image,
   * started with its own environment (ALLOCATOR_URL, API_TOKEN, VM_NAME...) instead of the LabLink
   * agent, and speaking the original client API (server/api/original-api.ts, docs/original-api.md).
   */
  clientImageCompat: boolean("client_image_compat").notNull().default(false),
  /**
   * Automatic recovery of unhealthy, silent and stuck VMs; only the settings that differ from the
   * defaults (parsed by recoveryPolicyOf in server/domain/recovery-policy.ts).
   */
  recoveryPolicy: jsonb("recovery_policy").$type<Record<string, unknown>>().notNull().default({}),
  /**
   * Largest work folder (MiB, before compression) a researcher may download from a VM of this
   * fleet (server/domain/work-export.ts); 0 turns downloads off.
   */
  workDownloadMaxMib: integer("work_download_max_mib").notNull().default(10240),
  /**
   * Upload each holder's work folder to S3 before the wipe (server/domain/work-archive.ts
   * WorkArchiveConfig: bucket, prefix, region, retentionDays); null: no archive.
   */
  workArchive: jsonb("work_archive").$type<Record<string, unknown>>(),
  status: fleetStatus("status").notNull().default("creating"),
  /** Driver-specific settings (AMI, subnet, startup script...); never secrets. */
  config: jsonb("config").$type<Record<string, unknown>>().notNull().default({}),
  /**
   * Warm-pool policy (server/domain/warm-pool.ts WarmPoolPolicy, zod-validated on read); null: the
   * fleet is sized by hand, as before warm pools existed.
   */
  warmPool: jsonb("warm_pool").$type<Record<string, unknown>>(),
  /** What the warm-pool reconciler last saw and decided (failure count, backoff, reason). */
  warmPoolState: jsonb("warm_pool_state").$type<Record<string, unknown>>(),
  /**
   * Booking policy (server/domain/bookings.ts BookingPolicy, zod-validated on read): seats,
   * how far ahead, how long, how many per researcher, grace and lead minutes. Null: not bookable.
   */
  bookingPolicy: jsonb("booking_policy").$type<Record<string, unknown>>(),
  createdAt: createdAt(),
  updatedAt: ts("updated_at").notNull().defaultNow(),
});

export type Fleet = typeof fleets.$inferSelect;
