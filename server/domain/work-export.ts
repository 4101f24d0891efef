import { randomUUID } from "node:crypto";
import { and, eq, inArray, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { fleets, type Vm, vms, type WorkExportStatus, workExports } from "../db/schema";
import { type AgentCommand, EXPORT_MIN_PROTOCOL_VERSION } from "../protocol/agent";
import { heldVm } from "./allocation";
import { audit } from "./audit";
import { DomainError } from "./errors";
import { formatBytes } from "./format";
import { liveFleet } from "./live-fleet";
import type { Actor } from "./vm-state";

/**
 * "Take your work along": the holder of a VM downloads their work folder (the research account's
 * home folder) as a tar.gz at any time during the hold. This module keeps the record of each
 * download (work_exports) and decides who may do what; server/api/work-export.ts moves the bytes
 * from the agent to the browser.
 */

/** An export the agent has not started within this time is dropped (the browser gave up). */
export const EXPORT_PENDING_TTL_S = 120;
/** Most a fleet's download limit may be set to: 1 TiB. */
export const WORK_DOWNLOAD_MAX_MIB = 1024 * 1024;
const MIB = 1024 * 1024;

const WORKING_STATES = ["claimed", "draining"] as const;

export type WorkExportTicket = {
  exportId: string;
  vmId: string;
  assignmentId: string;
  /** The fleet's limit in bytes (the folder before compression; the stream is cut there too). */
  limitBytes: number;
};

/**
 * The researcher asks for their work folder. Only the current holder of `vmId`, only once the
 * agent has set the VM up for this hold; one download per VM at a time (a new one ends an older
 * one that has not finished). Wakes the agent's long poll.
 */
export async function requestWorkExport(
  db: DbOrTx,
  req: { userId: string; vmId: string; actor: Actor },
): Promise<WorkExportTicket> {
  const vm = await heldVm(db, req.userId);
  // The same answer for someone else's VM and for no VM: ids of other VMs reveal nothing.
  if (!vm || vm.id !== req.vmId || !vm.assignmentId) {
    throw new DomainError("NOT_FOUND", "You do not hold this VM.");
  }
  if (!(WORKING_STATES as readonly string[]).includes(vm.state)) {
    throw new DomainError(
      "STATE_CONFLICT",
      `Your VM is ${vm.state}; there is nothing to download.`,
      {
        state: vm.state,
      },
    );
  }
  if (vm.assignmentAckedId !== vm.assignmentId) {
    throw new DomainError(
      "STATE_CONFLICT",
      "Your VM is still being set up for you; try again in a minute.",
      { state: vm.state },
    );
  }
  if ((vm.agentProtocolVersion ?? 1) < EXPORT_MIN_PROTOCOL_VERSION) {
    throw new DomainError(
      "NOT_SUPPORTED",
      "This VM's agent is too old to send your files; copy them with scp or rsync instead.",
    );
  }
  const [fleet] = await db
    .select({ maxMib: fleets.workDownloadMaxMib })
    .from(fleets)
    .where(eq(fleets.id, vm.fleetId));
  const maxMib = fleet?.maxMib ?? 0;
  if (maxMib <= 0) {
    throw new DomainError(
      "NOT_SUPPORTED",
      "Downloads are turned off on this fleet; copy your files with scp or rsync instead.",
    );
  }
  const exportId = randomUUID();
  const assignmentId = vm.assignmentId;
  await db.transaction(async (tx) => {
    await tx
      .update(workExports)
      .set({ status: "cancelled", error: "a newer download replaced it", finishedAt: new Date() })
      .where(
        and(eq(workExports.vmId, vm.id), inArray(workExports.status, ["pending", "streaming"])),
      );
    await tx
      .insert(workExports)
      .values({ id: exportId, vmId: vm.id, assignmentId, userId: req.userId });
    await audit(tx, req.actor, "vm.work_export_requested", { kind: "vm", id: vm.id }, {});
    // Wake the agent's long poll (delivered at commit).
    await tx.execute(
      sql`SELECT pg_notify('lablink_vm', json_build_object('id', ${vm.id}::uuid)::text)`,
    );
  });
  return { exportId, vmId: vm.id, assignmentId, limitBytes: maxMib * MIB };
}

/** The export commands for a VM's agent: the current holder's download not yet started. Read-only. */
export async function exportCommandsFor(db: DbOrTx, vm: Vm): Promise<AgentCommand[]> {
  if ((vm.agentProtocolVersion ?? 1) < EXPORT_MIN_PROTOCOL_VERSION || !vm.assignmentId) return [];
  const rows = await db
    .select({ id: workExports.id })
    .from(workExports)
    .where(
      and(
        eq(workExports.vmId, vm.id),
        eq(workExports.assignmentId, vm.assignmentId),
        eq(workExports.status, "pending"),
        sql`${workExports.createdAt} > now() - make_interval(secs => ${EXPORT_PENDING_TTL_S})`,
      ),
    );
  const assignmentId = vm.assignmentId;
  return rows.map((r) => ({ type: "export" as const, assignmentId, exportId: r.id }));
}

/** A condition true while the export's VM still belongs to the hold it was asked for. */
const holdCurrent = () => sql`EXISTS (SELECT 1 FROM ${vms} v WHERE v.id = ${workExports.vmId}
  AND v.assignment_id = ${workExports.assignmentId}
  AND v.state IN ('claimed', 'draining'))`;

/**
 * The agent starts sending export `exportId` of `vmId` (its token's VM), a folder of
 * `folderBytes` bytes. Single use: only a pending export of the VM's current hold starts, once.
 * A folder over the fleet's limit fails here, before a byte is sent.
 */
export async function beginWorkExport(
  db: DbOrTx,
  req: { exportId: string; vmId: string; folderBytes: number },
): Promise<{ limitBytes: number }> {
  const [row] = await db
    .select({
      status: workExports.status,
      maxMib: fleets.workDownloadMaxMib,
      current: holdCurrent(),
    })
    .from(workExports)
    .innerJoin(vms, eq(vms.id, workExports.vmId))
    .innerJoin(fleets, eq(fleets.id, vms.fleetId))
    .where(and(eq(workExports.id, req.exportId), eq(workExports.vmId, req.vmId)));
  if (!row) throw new DomainError("NOT_FOUND", "No such export for this VM.");
  if (row.status !== "pending" || !row.current) {
    throw new DomainError(
      "STATE_CONFLICT",
      `This export is ${row.status === "pending" ? "no longer wanted" : row.status}.`,
      {
        status: row.status,
      },
    );
  }
  const limitBytes = row.maxMib * MIB;
  if (req.folderBytes > limitBytes) {
    const error = `Your work folder is ${formatBytes(req.folderBytes)}, over this fleet's download limit of ${formatBytes(limitBytes)}. Delete what you do not need, or copy it with scp or rsync.`;
    await db
      .update(workExports)
      .set({ status: "failed", folderBytes: req.folderBytes, error, finishedAt: new Date() })
      .where(and(eq(workExports.id, req.exportId), eq(workExports.status, "pending")));
    throw new DomainError("FORBIDDEN", error, { folderBytes: req.folderBytes, limitBytes });
  }
  const started = await db
    .update(workExports)
    .set({ status: "streaming", folderBytes: req.folderBytes })
    .where(and(eq(workExports.id, req.exportId), eq(workExports.status, "pending"), holdCurrent()))
    .returning({ id: workExports.id });
  if (started.length === 0) {
    throw new DomainError("STATE_CONFLICT", "This export is no longer wanted.");
  }
  return { limitBytes };
}

/** Whether a streaming export may go on: not ended, and its hold still current (no release). */
export async function workExportWanted(db: DbOrTx, exportId: string): Promise<boolean> {
  const [row] = await db
    .select({ ok: sql<boolean>`${workExports.status} = 'streaming' AND ${holdCurrent()}` })
    .from(workExports)
    .where(eq(workExports.id, exportId));
  return row?.ok === true;
}

/** Records how an export ended (once: a finished export stays as it ended). */
export async function finishWorkExport(
  db: DbOrTx,
  req: {
    exportId: string;
    status: Extract<WorkExportStatus, "done" | "failed" | "cancelled">;
    bytes: number;
    error?: string;
    actor: Actor;
  },
): Promise<void> {
  await db.transaction(async (tx) => {
    const [row] = await tx
      .update(workExports)
      .set({
        status: req.status,
        bytes: req.bytes,
        error: req.error?.slice(0, 1000) ?? null,
        finishedAt: new Date(),
      })
      .where(
        and(
          eq(workExports.id, req.exportId),
          inArray(workExports.status, ["pending", "streaming"]),
        ),
      )
      .returning({ vmId: workExports.vmId });
    if (row && req.status === "done") {
      await audit(
        tx,
        req.actor,
        "vm.work_exported",
        { kind: "vm", id: row.vmId },
        {
          bytes: req.bytes,
        },
      );
    }
  });
}

/** How an export stands (tests, and the answer to a browser whose download failed). */
export async function workExportRow(db: DbOrTx, exportId: string) {
  const [row] = await db.select().from(workExports).where(eq(workExports.id, exportId));
  return row ?? null;
}

/** An admin sets a fleet's download limit (MiB before compression; 0 turns downloads off). */
export async function setWorkDownloadLimit(
  db: DbOrTx,
  req: { fleetId: string; maxMib: number; actor: Actor },
): Promise<{ fleetId: string; maxMib: number }> {
  if (!Number.isInteger(req.maxMib) || req.maxMib < 0 || req.maxMib > WORK_DOWNLOAD_MAX_MIB) {
    throw new DomainError("INVALID_INPUT", `The limit must be 0 to ${WORK_DOWNLOAD_MAX_MIB} MiB.`);
  }
  return db.transaction(async (tx) => {
    const fleet = await liveFleet(tx, req.fleetId, { forUpdate: true });
    await tx
      .update(fleets)
      .set({ workDownloadMaxMib: req.maxMib, updatedAt: sql`now()` })
      .where(eq(fleets.id, req.fleetId));
    await audit(
      tx,
      req.actor,
      "fleet.work_download_limit_set",
      { kind: "fleet", id: req.fleetId },
      { from: fleet.workDownloadMaxMib, to: req.maxMib },
    );
    return { fleetId: req.fleetId, maxMib: req.maxMib };
  });
}
