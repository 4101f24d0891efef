import { and, eq, inArray, ne, sql } from "drizzle-orm";
import { revokeAgentTokens } from "../auth/agent-tokens";
import type { InstanceInfo } from "../cloud/driver";
import type { Ec2Api } from "../cloud/ec2/ec2";
import type { Db } from "../db/client";
import { auditEvents, type Fleet, fleets, operations, type VmState, vms } from "../db/schema";
import { audit } from "./audit";
import { vmLaunched } from "./convergence";
import { systemActor, transition } from "./vm-state";

export type OrphanPolicy = "report" | "adopt" | "terminate";

/** The fleet's driver's describe(): what the cloud says exists (default: EC2 by fleet tag). */
export type Describe = (fleet: Fleet) => Promise<InstanceInfo[]>;

export type ReconcileReport = {
  fleet: string;
  skipped?: string;
  orphans: {
    instanceId: string;
    vmId: string | null;
    action: "reported" | "adopted" | "terminated";
  }[];
  ghosts: { vmId: string; name: string; to: VmState }[];
  mismatches: { vmId: string; name: string; instanceState: string; action: string }[];
  /** Rows whose addresses EC2 reports otherwise (a stop and start outside a LabLink reboot). */
  readdressed: { vmId: string; name: string; publicIp: string | null }[];
  errors: string[];
};

const GONE_INSTANCE = new Set(["terminated", "shutting-down"]);
const STOPPED_INSTANCE = new Set(["stopped", "stopping"]);
/** Row states that claim the instance is up and serving. */
const SERVING: readonly VmState[] = ["booting", "ready", "claimed", "releasing", "draining"];

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

/**
 * Compares what EC2 says exists (by the lablink:fleet tag) with the fleet's VM rows:
 * - orphans: a live instance no live row points at. Reported (once), adopted when its row is
 *   still provisioning without an instance (a run died between creating it and recording it),
 *   or terminated, per `policy`;
 * - ghosts: a row whose instance is gone or terminated: it moves to failed, visible to admins
 *   with the reason (or to terminated, if it was terminating) and its tokens are revoked;
 * - mismatches: a stopped instance whose row says it serves: the row moves to failed;
 * - addresses: a running instance whose public or private address differs from the row's (it
 *   was stopped and started): the row takes EC2's, so ssh commands point at the machine.
 * Every change goes through transition() (audit rows included); a failure on one instance is
 * recorded and the rest go on.
 */
export async function reconcileFleet(
  db: Db,
  fleet: Fleet,
  ec2: Ec2Api,
  policy: OrphanPolicy,
  observe?: Describe,
): Promise<ReconcileReport> {
  const report: ReconcileReport = {
    fleet: fleet.name,
    orphans: [],
    ghosts: [],
    mismatches: [],
    readdressed: [],
    errors: [],
  };
  if (!fleet.region) return { ...report, skipped: "no region" };
  const [busy] = await db
    .select({ id: operations.id })
    .from(operations)
    .where(
      and(eq(operations.fleetId, fleet.id), inArray(operations.status, ["queued", "running"])),
    );
  // An operation in flight is changing the fleet right now; look again next time.
  if (busy) return { ...report, skipped: "operation in flight" };

  let instances: InstanceInfo[];
  try {
    instances = observe ? await observe(fleet) : await ec2.describeFleet(fleet.region, fleet.name);
  } catch (e) {
    report.errors.push(message(e));
    return report;
  }
  const rows = await db
    .select()
    .from(vms)
    .where(and(eq(vms.fleetId, fleet.id), ne(vms.state, "terminated")));
  const rowById = new Map(rows.map((r) => [r.id, r]));
  const live = instances.filter((i) => !GONE_INSTANCE.has(i.state ?? ""));
  const byInstanceId = new Map(instances.map((i) => [i.providerId, i]));

  for (const inst of live) {
    const row = inst.vmId ? rowById.get(inst.vmId) : undefined;
    if (row && row.providerId === inst.providerId) continue;
    const adoptable = !!row && !row.providerId && row.state === "provisioning";
    try {
      let action: "reported" | "adopted" | "terminated" = "reported";
      if (policy === "adopt" && adoptable && row) {
        await transition(db, {
          vmId: row.id,
          from: "provisioning",
          to: "booting",
          actor: systemActor,
          action: "reconcile.adopt",
          patch: { providerId: inst.providerId },
          details: { fleet: fleet.name, instanceId: inst.providerId },
        });
        action = "adopted";
      } else if (policy === "terminate") {
        await ec2.terminate(fleet.region, inst.providerId);
        action = "terminated";
      }
      report.orphans.push({ instanceId: inst.providerId, vmId: inst.vmId ?? null, action });
      await auditOrphan(db, fleet, inst, policy, action);
    } catch (e) {
      report.errors.push(`${inst.providerId}: ${message(e)}`);
    }
  }

  for (const row of rows) {
    if (!row.providerId || row.providerId.startsWith("local:")) continue;
    const inst = byInstanceId.get(row.providerId);
    try {
      if (!inst || GONE_INSTANCE.has(inst.state ?? "")) {
        const details = {
          fleet: fleet.name,
          instanceId: row.providerId,
          instanceState: inst?.state ?? "absent",
        };
        // A failed row already says what happened; an admin terminates it when done looking.
        if (row.state === "failed") continue;
        let to: VmState;
        if (row.state === "terminating") {
          await transition(db, {
            vmId: row.id,
            from: "terminating",
            to: "terminated",
            actor: systemActor,
            action: "reconcile.ghost",
            details,
          });
          to = "terminated";
        } else {
          await transition(db, {
            vmId: row.id,
            from: row.state,
            to: "failed",
            actor: systemActor,
            action: "reconcile.ghost",
            patch: {
              healthy: false,
              healthReasons: [`instance ${row.providerId} is ${details.instanceState}`],
            },
            details,
          });
          to = "failed";
        }
        await revokeAgentTokens(db, row.id);
        report.ghosts.push({ vmId: row.id, name: row.name, to });
      } else if (STOPPED_INSTANCE.has(inst.state ?? "") && SERVING.includes(row.state)) {
        await transition(db, {
          vmId: row.id,
          from: row.state,
          to: "failed",
          actor: systemActor,
          action: "reconcile.mismatch",
          patch: {
            healthy: false,
            healthReasons: [`instance ${row.providerId} is ${inst.state} outside LabLink`],
          },
          details: { fleet: fleet.name, instanceId: row.providerId, instanceState: inst.state },
        });
        report.mismatches.push({
          vmId: row.id,
          name: row.name,
          instanceState: inst.state ?? "",
          action: "failed",
        });
      } else if (
        inst.state === "running" &&
        inst.publicIp !== undefined &&
        (inst.publicIp !== row.publicIp || (inst.privateIp ?? null) !== row.privateIp)
      ) {
        await vmLaunched(db, row.id, {
          providerId: row.providerId,
          publicIp: inst.publicIp,
          privateIp: inst.privateIp ?? null,
        });
        report.readdressed.push({ vmId: row.id, name: row.name, publicIp: inst.publicIp });
      }
    } catch (e) {
      report.errors.push(`${row.name}: ${message(e)}`);
    }
  }
  return report;
}

/** One audit row per orphan and outcome (a reported orphan is not re-audited every minute). */
async function auditOrphan(
  db: Db,
  fleet: Fleet,
  inst: InstanceInfo,
  policy: OrphanPolicy,
  action: string,
) {
  if (action === "reported") {
    const [seen] = await db
      .select({ id: auditEvents.id })
      .from(auditEvents)
      .where(
        and(
          eq(auditEvents.action, "reconcile.orphan"),
          eq(auditEvents.targetKind, "instance"),
          eq(auditEvents.targetId, inst.providerId),
        ),
      )
      .limit(1);
    if (seen) return;
  }
  await audit(
    db,
    systemActor,
    "reconcile.orphan",
    { kind: "instance", id: inst.providerId },
    {
      fleet: fleet.name,
      fleetId: fleet.id,
      vmId: inst.vmId ?? null,
      instanceState: inst.state,
      policy,
      action,
    },
  );
}

/**
 * Reconciles every cloud fleet, one worker at a time: a transaction-scoped advisory lock makes a
 * second worker (or an overlapping run) skip instead of doing the same work twice.
 */
export async function reconcileAll(
  db: Db,
  ec2: Ec2Api,
  policy: OrphanPolicy,
  observe?: Describe,
): Promise<{ skipped: true } | { skipped: false; reports: ReconcileReport[] }> {
  return db.transaction(async (tx) => {
    const [lock] = await tx.execute<{ ok: boolean }>(
      sql`SELECT pg_try_advisory_xact_lock(hashtext('lablink:reconcile')) AS ok`,
    );
    if (!lock?.ok) return { skipped: true as const };
    const targets = await db
      .select()
      .from(fleets)
      .where(and(eq(fleets.driver, "terraform"), ne(fleets.status, "destroyed")));
    const reports: ReconcileReport[] = [];
    for (const f of targets) reports.push(await reconcileFleet(db, f, ec2, policy, observe));
    return { skipped: false as const, reports };
  });
}
