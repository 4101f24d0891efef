import { sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { vms } from "../db/schema";
import { DomainError } from "./errors";

/** The charts never get more than this many points per GPU, whatever the range. */
export const MAX_POINTS_PER_GPU = 300;

export type GpuHistoryPoint = {
  /** Start of the bucket (ISO 8601). */
  at: string;
  utilizationPct: number | null;
  memoryUsedMiB: number | null;
  memoryTotalMiB: number | null;
  temperatureC: number | null;
};

export type GpuHistory = {
  vmId: string;
  hours: number;
  /** Width of one point: samples inside it are averaged (temperature: its maximum). */
  bucketSeconds: number;
  from: string;
  to: string;
  gpus: { index: number; points: GpuHistoryPoint[] }[];
};

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/**
 * A VM's GPU samples over the last `hours`, downsampled in the database into at most
 * MAX_POINTS_PER_GPU buckets per GPU: utilisation and memory are averaged per bucket, temperature
 * is the bucket's maximum (a short spike should not vanish in the average).
 */
export async function gpuHistory(db: DbOrTx, vmId: string, hours: number): Promise<GpuHistory> {
  const [vm] = await db.select({ id: vms.id }).from(vms).where(sql`${vms.id} = ${vmId}`);
  if (!vm) throw new DomainError("NOT_FOUND", "There is no such VM.");
  const bucketSeconds = Math.max(1, Math.ceil((hours * 3600) / MAX_POINTS_PER_GPU));
  const rows = await db.execute<{
    bucket: string;
    idx: number;
    util: string | null;
    mem_used: string | null;
    mem_total: string | null;
    temp: string | null;
  }>(sql`
    SELECT
      floor(extract(epoch FROM s.at) / ${bucketSeconds}::int)::bigint AS bucket,
      (g->>'index')::int AS idx,
      avg((g->>'utilizationPct')::float8) AS util,
      avg((g->>'memoryUsedMiB')::float8) AS mem_used,
      max((g->>'memoryTotalMiB')::float8) AS mem_total,
      max((g->>'temperatureC')::float8) AS temp
    FROM gpu_samples s
    CROSS JOIN LATERAL jsonb_array_elements(s.gpus) AS g
    WHERE s.vm_id = ${vmId} AND s.at >= now() - make_interval(hours => ${hours}::int)
    GROUP BY 1, 2
    ORDER BY 2, 1`);
  const byGpu = new Map<number, GpuHistoryPoint[]>();
  for (const r of rows) {
    const points = byGpu.get(r.idx) ?? [];
    points.push({
      at: new Date(Number(r.bucket) * bucketSeconds * 1000).toISOString(),
      utilizationPct: num(r.util),
      memoryUsedMiB: num(r.mem_used),
      memoryTotalMiB: num(r.mem_total),
      temperatureC: num(r.temp),
    });
    byGpu.set(r.idx, points);
  }
  const to = new Date();
  return {
    vmId,
    hours,
    bucketSeconds,
    from: new Date(to.getTime() - hours * 3600_000).toISOString(),
    to: to.toISOString(),
    gpus: [...byGpu.entries()]
      .sort(([a], [b]) => a - b)
      .map(([index, points]) => ({ index, points })),
  };
}

/** Deletes GPU samples older than `retentionHours` (the periodic `gpu-samples.prune` job). */
export async function pruneGpuSamples(db: DbOrTx, retentionHours: number): Promise<number> {
  const deleted = await db.execute<{ n: number }>(sql`
    WITH gone AS (
      DELETE FROM gpu_samples WHERE at < now() - make_interval(hours => ${retentionHours}::int)
      RETURNING 1)
    SELECT count(*)::int AS n FROM gone`);
  return deleted[0]?.n ?? 0;
}
