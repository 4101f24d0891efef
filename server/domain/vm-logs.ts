import { and, asc, desc, eq, gt, lt, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { type BootTimings, type VmLogSource, vmLogs, vms } from "../db/schema";
import type { BootTimingsInput, LogsInput } from "../protocol/agent";
import { DomainError } from "./errors";

/** Newest lines kept per VM; older ones are pruned as new ones arrive. */
export const VM_LOG_KEEP = 5_000;
/**
 * Prune when a call's ids cross a multiple of this: about once per this many lines a VM ships,
 * so the per-VM bound costs one index range delete now and then, not one per call. A VM may hold
 * up to about this many lines over VM_LOG_KEEP between prunes.
 */
export const VM_LOG_PRUNE_EVERY = 1_000;

export type RecordLogsOptions = { keep?: number; pruneEvery?: number };

/**
 * Stores one batch of a VM's shipped lines (agent.logs) and keeps the VM's newest `keep` lines.
 * The token already proved the caller is this VM's agent (agentProcedure).
 */
export async function recordLogs(
  db: DbOrTx,
  input: LogsInput,
  options: RecordLogsOptions = {},
): Promise<{ accepted: number }> {
  const keep = options.keep ?? VM_LOG_KEEP;
  const pruneEvery = options.pruneEvery ?? VM_LOG_PRUNE_EVERY;
  return db.transaction(async (tx) => {
    const [vm] = await tx.select({ id: vms.id }).from(vms).where(eq(vms.id, input.vmId));
    if (!vm) throw new DomainError("NOT_FOUND", "This VM is not known to the server.");
    const rows = input.lines.map((l) => ({
      vmId: input.vmId,
      bootId: input.bootId,
      at: new Date(l.at),
      source: l.source,
      level: l.level,
      // Postgres text cannot hold NUL; a binary line from a container must not fail the batch.
      message: l.message.replaceAll("\u0000", "\uFFFD"),
    }));
    if (input.dropped) {
      rows.push({
        vmId: input.vmId,
        bootId: input.bootId,
        at: new Date(),
        source: "agent",
        level: "warn",
        message: `agent dropped ${input.dropped} log line(s): its buffer was full while the server was unreachable`,
      });
    }
    const ids = await tx.insert(vmLogs).values(rows).returning({ id: vmLogs.id });
    const first = ids[0]?.id ?? 0;
    const last = ids.at(-1)?.id ?? 0;
    if (Math.floor(last / pruneEvery) !== Math.floor((first - 1) / pruneEvery)) {
      await pruneLogs(tx, input.vmId, keep);
    }
    return { accepted: input.lines.length };
  });
}

/** Deletes all but the newest `keep` lines of one VM (two index range scans on vm_logs_vm_idx). */
export async function pruneLogs(db: DbOrTx, vmId: string, keep = VM_LOG_KEEP): Promise<number> {
  const [edge] = await db
    .select({ id: vmLogs.id })
    .from(vmLogs)
    .where(eq(vmLogs.vmId, vmId))
    .orderBy(desc(vmLogs.id))
    .offset(keep - 1)
    .limit(1);
  if (!edge) return 0;
  const deleted = await db
    .delete(vmLogs)
    .where(and(eq(vmLogs.vmId, vmId), lt(vmLogs.id, edge.id)))
    .returning({ id: vmLogs.id });
  return deleted.length;
}

export type LogQuery = {
  vmId: string;
  /** Lines after this id (the live tail's cursor); without it, the newest `limit` lines. */
  afterId?: number;
  source?: VmLogSource;
  limit: number;
};

/** A VM's shipped lines, oldest first, for the admin's live tail. */
export async function listLogs(db: DbOrTx, q: LogQuery) {
  const [vm] = await db.select({ id: vms.id }).from(vms).where(eq(vms.id, q.vmId));
  if (!vm) throw new DomainError("NOT_FOUND", "No such VM.", { vmId: q.vmId });
  const columns = {
    id: vmLogs.id,
    at: vmLogs.at,
    receivedAt: vmLogs.receivedAt,
    source: vmLogs.source,
    level: vmLogs.level,
    message: vmLogs.message,
  };
  const where = and(
    eq(vmLogs.vmId, q.vmId),
    q.afterId !== undefined ? gt(vmLogs.id, q.afterId) : undefined,
    q.source ? eq(vmLogs.source, q.source) : undefined,
  );
  const lines =
    q.afterId !== undefined
      ? await db.select(columns).from(vmLogs).where(where).orderBy(asc(vmLogs.id)).limit(q.limit)
      : (
          await db.select(columns).from(vmLogs).where(where).orderBy(desc(vmLogs.id)).limit(q.limit)
        ).reverse();
  return { lines, cursor: lines.at(-1)?.id ?? q.afterId ?? 0 };
}

/**
 * The stored timings for this boot: a new boot id starts over; the server's `registeredAt` is
 * kept across the agent's updates within a boot.
 */
export function mergeBootTimings(
  stored: BootTimings | null,
  bootId: string,
  reported: BootTimingsInput | undefined,
  registeredNow: boolean,
): BootTimings {
  const sameBoot = stored?.bootId === bootId ? stored : null;
  return {
    ...(sameBoot ?? {}),
    ...(reported ?? {}),
    bootId,
    registeredAt: registeredNow ? new Date().toISOString() : (sameBoot?.registeredAt ?? null),
  };
}

/** SQL for a heartbeat's update: the new timings keep the row's registeredAt (same boot). */
export function bootTimingsUpdate(bootId: string, reported: BootTimingsInput) {
  return sql`${JSON.stringify({ ...reported, bootId })}::jsonb || jsonb_build_object('registeredAt', ${vms.bootTimings}->'registeredAt')`;
}
