import { sql } from "drizzle-orm";
import {
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  text,
  uniqueIndex,
  uuid,
} from "drizzle-orm/pg-core";
import { createdAt, id, ts } from "./columns";
import { fleets } from "./fleets";
import { users } from "./users";

export const vmState = pgEnum("vm_state", [
  "provisioning",
  "booting",
  "ready",
  "claimed",
  "releasing",
  "draining",
  "rebooting",
  "terminating",
  "terminated",
  "failed",
]);
export type VmState = (typeof vmState.enumValues)[number];

/**
 * When this boot's milestones finished, as the agent saw them (ISO times). The agent reports what
 * it can read: the kernel boot time, cloud-init's result, the research container's start.
 */
export type BootTimings = {
  bootId: string;
  bootedAt?: string | null;
  cloudInitFinishedAt?: string | null;
  cloudInitStatus?: string | null;
  containerReadyAt?: string | null;
  agentStartedAt?: string | null;
  registeredAt?: string | null;
  /** Reported by original LabLink client images only (POST /api/vm-metrics). */
  cloudInitStartedAt?: string | null;
  containerStartedAt?: string | null;
};

/** One GPU as last reported by the agent. */
export type GpuReading = {
  index: number;
  uuid: string | null;
  name: string;
  temperatureC: number | null;
  utilizationPct: number | null;
  memoryUsedMiB: number | null;
  memoryTotalMiB: number | null;
  powerDrawW: number | null;
  healthy: boolean;
  reasons: string[];
};

export const vms = pgTable(
  "vms",
  {
    id: id(),
    fleetId: uuid("fleet_id")
      .notNull()
      .references(() => fleets.id),
    name: text("name").notNull(),
    /** Cloud instance id (i-0abc...), or the local driver's process key. */
    providerId: text("provider_id"),
    /** Addresses the provider reported (Terraform output); null for local VMs. */
    privateIp: text("private_ip"),
    publicIp: text("public_ip"),
    state: vmState("state").notNull().default("provisioning"),
    holderId: uuid("holder_id").references(() => users.id),
    /** New on every claim; the agent's assignment and wipe acknowledgements name it. */
    assignmentId: uuid("assignment_id"),
    /** The assignment the agent last confirmed it set up. */
    assignmentAckedId: uuid("assignment_acked_id"),
    /** Set by an admin drain: after the current holder releases, the VM stays out of the pool. */
    drainRequested: boolean("drain_requested").notNull().default(false),
    claimedAt: ts("claimed_at"),
    releasedAt: ts("released_at"),
    stateChangedAt: ts("state_changed_at").notNull().defaultNow(),
    lastHeartbeatAt: ts("last_heartbeat_at"),
    bootId: text("boot_id"),
    hostname: text("hostname"),
    agentVersion: text("agent_version"),
    /** The protocol version the agent registered with; gates commands older agents do not know. */
    agentProtocolVersion: integer("agent_protocol_version"),
    healthy: boolean("healthy").notNull().default(false),
    healthReasons: jsonb("health_reasons").$type<string[]>().notNull().default([]),
    gpus: jsonb("gpus").$type<GpuReading[]>().notNull().default([]),
    inUse: boolean("in_use").notNull().default(false),
    idleSince: ts("idle_since"),
    /**
     * When the holder last said "I'm still using it" on My VM: the fleet's idle limit counts from
     * the latest of the claim, the start of idleness and this.
     */
    idleKeptAt: ts("idle_kept_at"),
    /** Extensions of the current hold ("Extend" on My VM); the claim sets it back to 0. */
    holdExtensions: integer("hold_extensions").notNull().default(0),
    /** Minutes those extensions added: the hold ends at the claim + the fleet's limit + this. */
    holdExtendedMinutes: integer("hold_extended_minutes").notNull().default(0),
    /** The current boot's timings (see BootTimings); null until the agent reports any. */
    bootTimings: jsonb("boot_timings").$type<BootTimings>(),
    /**
     * Why the fleet's startup script or research container did not come up cleanly on this boot
     * (its last output lines): the reason a VM failed, or a warning on a VM the fleet's `continue`
     * policy let into the pool. Admins only; null when the boot was clean or not yet reported.
     */
    startupIssue: text("startup_issue"),
    /**
     * The booking this ready VM is set aside for (server/domain/bookings.ts): no claim but the
     * booker's takes it. A column on the VM row, not only bookings.vm_id, so the claim's
     * `FOR UPDATE SKIP LOCKED` re-checks it on the row it locks (no race with the set-aside).
     */
    reservedBookingId: uuid("reserved_booking_id"),
    createdAt: createdAt(),
  },
  (t) => [
    // Names are unique among a fleet's existing VMs; a terminated VM's name may be reused.
    uniqueIndex("vms_fleet_name_live_key").on(t.fleetId, t.name).where(sql`state <> 'terminated'`),
    // The claim query walks this partial index: only claimable rows, oldest-ready first.
    index("vms_claimable_idx")
      .on(t.fleetId, t.stateChangedAt)
      .where(sql`state = 'ready' AND healthy`),
    // The same for claims that name no fleet (the common case): the order is the index order.
    index("vms_claimable_any_idx")
      .on(t.stateChangedAt, t.id)
      .where(sql`state = 'ready' AND healthy`),
    // "One active VM per researcher" is a database guarantee, not an application check.
    uniqueIndex("vms_one_active_per_holder").on(t.holderId).where(sql`holder_id IS NOT NULL`),
    index("vms_state_idx").on(t.state),
    // No index on last_heartbeat_at (or gpus): the heartbeat flush rewrites those on every VM
    // every second, and an UPDATE that changes no indexed column is a heap-only (HOT) update that
    // touches no index at all. The stale-agent sweep scans the table instead (migration 0009).
    check("vms_claimed_has_holder", sql`state <> 'claimed' OR holder_id IS NOT NULL`),
    // A holder survives a drain and a warm reboot; every other state has none.
    check(
      "vms_holder_only_when_held",
      sql`holder_id IS NULL OR state IN ('claimed', 'draining', 'rebooting', 'booting')`,
    ),
  ],
);

export type Vm = typeof vms.$inferSelect;
