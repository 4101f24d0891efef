import type postgres from "postgres";
import { type DbOrTx, pgClient } from "../db/client";
import type { GpuSamplePoint } from "../db/schema";
import { logger } from "../log";
import type { GpuReadingInput } from "../protocol/agent";

/**
 * Heartbeats that change nothing material (the same health verdict, reasons, in-use and idle
 * state; only fresh GPU readings and the time) are not written one by one: each web process keeps
 * the latest of them per VM and writes them all with one multi-row UPDATE every `flushMs`. Anything
 * material is written at once by the heartbeat itself (server/domain/agents.ts), which also drops
 * the VM's buffered entry. GPU samples for the charts (at most one per VM per sample interval) go
 * out with the same flush, as one multi-row INSERT.
 *
 * Safe with several web processes: the UPDATE only moves `last_heartbeat_at` forward (an older
 * buffered reading never overwrites a newer one, from this process or another), only for the boot
 * the reading came from, and never for a VM whose agent said goodbye; the sample INSERT skips a VM
 * that already has a sample within the interval. The cost of a crash is at most `flushMs` of GPU
 * readings and heartbeat times, repaired by the agent's next heartbeat.
 */
export type BufferSettings = { flushMs: number; sampleIntervalS: number };

// The JSON goes in as text and is cast in SQL: a `jsonb` parameter would be encoded again by a
// postgres.js client that Drizzle has not configured (its default JSON serializer).
type Pending = { id: string; boot_id: string; gpus: GpuReadingInput[]; at: string };
type PendingSample = { vm_id: string; at: string; gpus: GpuSamplePoint[] };

const FLUSH_UPDATE = `
  UPDATE vms SET gpus = v.gpus, last_heartbeat_at = v.at
  FROM jsonb_to_recordset($1::text::jsonb) AS v(id uuid, boot_id text, gpus jsonb, at timestamptz)
  WHERE vms.id = v.id
    AND vms.boot_id = v.boot_id
    AND (vms.last_heartbeat_at IS NULL OR vms.last_heartbeat_at < v.at)
    AND NOT (vms.health_reasons @> $2::text::jsonb)`;

const INSERT_SAMPLES = `
  INSERT INTO gpu_samples (vm_id, at, gpus)
  SELECT v.vm_id, v.at, v.gpus
  FROM jsonb_to_recordset($1::text::jsonb) AS v(vm_id uuid, at timestamptz, gpus jsonb)
  WHERE EXISTS (SELECT 1 FROM vms WHERE vms.id = v.vm_id)
    AND NOT EXISTS (
      SELECT 1 FROM gpu_samples s
      WHERE s.vm_id = v.vm_id AND s.at > v.at - make_interval(secs => $2::int))
  ON CONFLICT DO NOTHING`;

/** The compact per-GPU reading kept for the charts. */
export function samplePoints(gpus: GpuReadingInput[]): GpuSamplePoint[] {
  return gpus.map((g) => ({
    index: g.index,
    utilizationPct: g.utilizationPct,
    memoryUsedMiB: g.memoryUsedMiB,
    memoryTotalMiB: g.memoryTotalMiB,
    temperatureC: g.temperatureC,
    powerDrawW: g.powerDrawW,
  }));
}

export class HeartbeatBuffer {
  private pending = new Map<string, Pending>();
  private samples = new Map<string, PendingSample>();
  /** When this process last took a sample per VM (ms since epoch). */
  private lastSample = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly sql: postgres.Sql,
    readonly settings: BufferSettings,
    private readonly shuttingDownReason: string,
  ) {}

  /** Keeps the latest non-material reading of a VM until the next flush. */
  put(vmId: string, bootId: string, gpus: GpuReadingInput[], at: Date): void {
    this.pending.set(vmId, { id: vmId, boot_id: bootId, gpus, at: at.toISOString() });
    this.schedule();
  }

  /** The VM was just written in full: its buffered reading is older and must not follow. */
  drop(vmId: string): void {
    this.pending.delete(vmId);
  }

  /** Takes a GPU sample for the charts when this VM's last one is at least the interval old. */
  sample(vmId: string, gpus: GpuReadingInput[], at: Date): void {
    if (this.settings.sampleIntervalS <= 0 || gpus.length === 0) return;
    const last = this.lastSample.get(vmId);
    if (last !== undefined && at.getTime() - last < this.settings.sampleIntervalS * 1000) return;
    this.lastSample.set(vmId, at.getTime());
    this.samples.set(vmId, { vm_id: vmId, at: at.toISOString(), gpus: samplePoints(gpus) });
    this.schedule();
  }

  get size(): number {
    return this.pending.size + this.samples.size;
  }

  private schedule() {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, this.settings.flushMs);
    this.timer.unref();
  }

  /** Writes everything buffered now (also what the timer does). Never throws. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const rows = [...this.pending.values()];
    const samples = [...this.samples.values()];
    this.pending = new Map();
    this.samples = new Map();
    // One flush at a time, in order: a later flush never lands before an earlier one.
    this.flushing = this.flushing.then(() => this.write(rows, samples));
    return this.flushing;
  }

  private async write(rows: Pending[], samples: PendingSample[]) {
    if (rows.length > 0) {
      await this.withRetry("heartbeat flush", () =>
        this.sql.unsafe(
          FLUSH_UPDATE,
          [JSON.stringify(rows), JSON.stringify([this.shuttingDownReason])],
          { prepare: true },
        ),
      );
    }
    if (samples.length > 0) {
      await this.withRetry("gpu sample insert", () =>
        this.sql.unsafe(INSERT_SAMPLES, [JSON.stringify(samples), this.settings.sampleIntervalS], {
          prepare: true,
        }),
      );
    }
    // Forget VMs that stopped sampling long ago, so the map does not grow with retired VMs.
    if (this.lastSample.size > 0 && Math.random() < 0.01) {
      const cutoff = Date.now() - 10 * this.settings.sampleIntervalS * 1000;
      for (const [id, t] of this.lastSample) if (t < cutoff) this.lastSample.delete(id);
    }
  }

  /** A deadlock with another process's flush (rows locked in another order) is retried once. */
  private async withRetry(what: string, run: () => Promise<unknown>) {
    for (let attempt = 1; ; attempt++) {
      try {
        await run();
        return;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (attempt < 3 && (code === "40P01" || code === "40001")) continue;
        logger.warn(
          { err, what },
          "buffered heartbeat write failed; the next heartbeat repairs it",
        );
        return;
      }
    }
  }
}

const buffers = new WeakMap<postgres.Sql, HeartbeatBuffer>();
// On globalThis: Next bundles the route handlers apart from server/web.ts, which flushes on shutdown.
const g = globalThis as unknown as { lablinkHeartbeatBuffers?: Set<HeartbeatBuffer> };
g.lablinkHeartbeatBuffers ??= new Set();
const live = g.lablinkHeartbeatBuffers;

/** The process's buffer for this database (one per connection pool). */
export function heartbeatBuffer(
  db: DbOrTx,
  settings: BufferSettings,
  shuttingDownReason: string,
): HeartbeatBuffer {
  const sql = pgClient(db);
  let b = buffers.get(sql);
  if (
    !b ||
    b.settings.flushMs !== settings.flushMs ||
    b.settings.sampleIntervalS !== settings.sampleIntervalS
  ) {
    if (b) {
      const old = b;
      void old.flush().then(() => live.delete(old));
    }
    b = new HeartbeatBuffer(sql, settings, shuttingDownReason);
    buffers.set(sql, b);
    live.add(b);
  }
  return b;
}

/** Writes every buffer of this process now (shutdown, tests). */
export async function flushHeartbeatBuffers(): Promise<void> {
  await Promise.all([...live].map((b) => b.flush()));
}
