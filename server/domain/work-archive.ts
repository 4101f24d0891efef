import { and, desc, eq, sql } from "drizzle-orm";
import { z } from "zod";
import type { DbOrTx } from "../db/client";
import { auditEvents, fleets, type Vm, workArchives } from "../db/schema";
import { logger } from "../log";
import { EXPORT_MIN_PROTOCOL_VERSION } from "../protocol/agent";
import { audit } from "./audit";
import { liveFleet } from "./live-fleet";
import type { Actor } from "./vm-state";

/**
 * Optional per fleet: on release, before the wipe, the agent uploads the holder's work folder
 * (their home folder, as for the download) as a tar.gz to S3 with a presigned PUT URL the server
 * puts in the wipe command; the researcher's profile links to it (a presigned GET, made on each
 * view) for `retentionDays`. Object key: <prefix>/<userId>/<assignmentId>.tar.gz.
 */
export const workArchiveConfigSchema = z.strictObject({
  bucket: z
    .string()
    .regex(
      /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
      "An S3 bucket name: 3 to 63 lower-case letters, digits, dots and hyphens.",
    ),
  prefix: z
    .string()
    .regex(
      /^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/,
      "A key prefix like lablink/work: letters, digits, _ and -, separated by /.",
    )
    .max(200),
  region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, "An AWS region like us-west-2."),
  retentionDays: z.number().int().min(1, "At least 1 day.").max(365, "At most 365 days."),
});
export type WorkArchiveConfig = z.infer<typeof workArchiveConfigSchema>;

export type ArchiveLocation = { bucket: string; region: string; key: string };

/** Presigns S3 URLs (server/cloud/s3/archive-signer.ts); registered by the process at start. */
export interface ArchiveSigner {
  presignPut(loc: ArchiveLocation, expiresInS: number): Promise<string>;
  presignGet(loc: ArchiveLocation, expiresInS: number): Promise<string>;
}

/** How long a wipe command's upload URL is good for; a new reply carries a fresh one. */
export const ARCHIVE_PUT_TTL_S = 3600;
/** How long a profile's download link is good for (made again on every view). */
export const ARCHIVE_GET_TTL_S = 3600;

const SIGNER = Symbol.for("lablink.archiveSigner");
type Holder = Record<symbol, ArchiveSigner | undefined>;

/** Sets this process's signer (web and worker at start; tests with an endpoint of their own). */
export function registerArchiveSigner(signer: ArchiveSigner | null): void {
  (globalThis as unknown as Holder)[SIGNER] = signer ?? undefined;
}

function signer(): ArchiveSigner | null {
  return (globalThis as unknown as Holder)[SIGNER] ?? null;
}

/** A fleet's archive settings, or null (none, or stored settings that no longer parse). */
export function archiveConfigOf(raw: unknown): WorkArchiveConfig | null {
  if (raw === null || raw === undefined) return null;
  const parsed = workArchiveConfigSchema.safeParse(raw);
  return parsed.success ? parsed.data : null;
}

/**
 * Who held a releasing VM (the release clears `holder_id`): the researcher of its latest claim,
 * which is this assignment's, since a VM is not claimed again before its wipe.
 */
async function releasedHolder(db: DbOrTx, vm: Vm): Promise<string | null> {
  if (vm.holderId) return vm.holderId;
  const [row] = await db
    .select({ userId: auditEvents.actorId })
    .from(auditEvents)
    .where(
      and(
        eq(auditEvents.targetKind, "vm"),
        eq(auditEvents.targetId, vm.id),
        eq(auditEvents.action, "vm.claim"),
        eq(auditEvents.actorKind, "user"),
      ),
    )
    .orderBy(desc(auditEvents.at))
    .limit(1);
  return row?.userId ?? null;
}

export function archiveKey(config: WorkArchiveConfig, userId: string, assignmentId: string) {
  return `${config.prefix}/${userId}/${assignmentId}.tar.gz`;
}

/**
 * The upload a wipe command carries: for a releasing VM of a fleet with an archive, whose agent
 * speaks protocol 4 and whose holder is known. Read-only; presigning needs no network.
 */
export async function archiveForWipe(
  db: DbOrTx,
  vm: Vm,
): Promise<{ url: string; key: string } | undefined> {
  const s = signer();
  if (!s || !vm.assignmentId) return undefined;
  if ((vm.agentProtocolVersion ?? 1) < EXPORT_MIN_PROTOCOL_VERSION) return undefined;
  const [fleet] = await db
    .select({ archive: fleets.workArchive })
    .from(fleets)
    .where(eq(fleets.id, vm.fleetId));
  const config = archiveConfigOf(fleet?.archive);
  if (!config) return undefined;
  const holder = await releasedHolder(db, vm);
  if (!holder) return undefined;
  const key = archiveKey(config, holder, vm.assignmentId);
  try {
    const url = await s.presignPut(
      { bucket: config.bucket, region: config.region, key },
      ARCHIVE_PUT_TTL_S,
    );
    return { url, key };
  } catch (err) {
    // No credentials here: the wipe must not wait for them. The archive is skipped.
    logger.warn(
      { vmId: vm.id, error: err instanceof Error ? err.message : String(err) },
      "work archive not signed; wiping without it",
    );
    return undefined;
  }
}

/**
 * The agent reports the upload's outcome with its wipe acknowledgement: one row per assignment
 * (a repeated acknowledgement changes nothing). A failure is kept too, so the researcher is told.
 */
export async function recordArchive(
  db: DbOrTx,
  vm: Vm,
  outcome: { ok: boolean; bytes?: number; error?: string },
  actor: Actor,
): Promise<void> {
  if (!vm.assignmentId) return;
  const [fleet] = await db
    .select({ archive: fleets.workArchive })
    .from(fleets)
    .where(eq(fleets.id, vm.fleetId));
  const config = archiveConfigOf(fleet?.archive);
  const holder = await releasedHolder(db, vm);
  if (!config || !holder) return;
  const key = archiveKey(config, holder, vm.assignmentId);
  const inserted = await db
    .insert(workArchives)
    .values({
      assignmentId: vm.assignmentId,
      userId: holder,
      vmId: vm.id,
      vmName: vm.name,
      bucket: config.bucket,
      region: config.region,
      key,
      status: outcome.ok ? "uploaded" : "failed",
      bytes: outcome.bytes ?? null,
      error: outcome.ok ? null : (outcome.error ?? "unknown error").slice(0, 1000),
      expiresAt: sql`now() + make_interval(days => ${config.retentionDays})`,
    })
    .onConflictDoNothing()
    .returning({ key: workArchives.key });
  if (inserted.length > 0) {
    await audit(
      db,
      actor,
      outcome.ok ? "vm.work_archived" : "vm.work_archive_failed",
      { kind: "vm", id: vm.id },
      outcome.ok ? { key, bytes: outcome.bytes ?? null } : { key, error: outcome.error ?? null },
    );
  }
}

export type MyArchive = {
  assignmentId: string;
  vmName: string;
  status: "uploaded" | "failed";
  bytes: number | null;
  error: string | null;
  createdAt: Date;
  expiresAt: Date;
  /** A presigned GET link, good for ARCHIVE_GET_TTL_S; null for a failed upload. */
  url: string | null;
};

/** The researcher's own archives not yet expired, newest first, each with a fresh link. */
export async function myArchives(db: DbOrTx, userId: string): Promise<MyArchive[]> {
  const rows = await db
    .select()
    .from(workArchives)
    .where(and(eq(workArchives.userId, userId), sql`${workArchives.expiresAt} > now()`))
    .orderBy(desc(workArchives.createdAt))
    .limit(50);
  const s = signer();
  return Promise.all(
    rows.map(async (r) => ({
      assignmentId: r.assignmentId,
      vmName: r.vmName,
      status: r.status,
      bytes: r.bytes,
      error: r.error,
      createdAt: r.createdAt,
      expiresAt: r.expiresAt,
      url:
        r.status === "uploaded" && s
          ? await s.presignGet(
              { bucket: r.bucket, region: r.region, key: r.key },
              Math.min(
                ARCHIVE_GET_TTL_S,
                Math.max(1, Math.floor((r.expiresAt.getTime() - Date.now()) / 1000)),
              ),
            )
          : null,
    })),
  );
}

/** An admin turns the archive on (or changes it), or off with null. Audited. */
export async function setWorkArchive(
  db: DbOrTx,
  req: { fleetId: string; archive: WorkArchiveConfig | null; actor: Actor },
): Promise<{ fleetId: string; archive: WorkArchiveConfig | null }> {
  return db.transaction(async (tx) => {
    const fleet = await liveFleet(tx, req.fleetId, { forUpdate: true });
    await tx
      .update(fleets)
      .set({ workArchive: req.archive, updatedAt: sql`now()` })
      .where(eq(fleets.id, req.fleetId));
    await audit(
      tx,
      req.actor,
      "fleet.work_archive_set",
      { kind: "fleet", id: req.fleetId },
      { from: fleet.workArchive, to: req.archive },
    );
    return { fleetId: req.fleetId, archive: req.archive };
  });
}
