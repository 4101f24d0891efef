import type { GpuReadingInput } from "../../../server/protocol/agent";
import type { ParsedGpu } from "./parse";

export type Health = { healthy: boolean; reasons: string[] };

export type HealthThresholds = {
  /** temperature.gpu above this is unhealthy. Datacenter GPUs slow down near 85-90 °C. */
  gpuTempMaxC: number;
  /** temperature.memory (HBM) above this is unhealthy; HBM is rated to ~95 °C. */
  gpuMemTempMaxC: number;
};

export const DEFAULT_THRESHOLDS: HealthThresholds = { gpuTempMaxC: 90, gpuMemTempMaxC: 95 };

/** NVML nvmlClocksEventReason* bits, as printed in clocks_event_reasons.active. */
export const CLOCK_EVENT = {
  gpuIdle: 0x1n,
  applicationsClocksSetting: 0x2n,
  swPowerCap: 0x4n,
  hwSlowdown: 0x8n,
  syncBoost: 0x10n,
  swThermalSlowdown: 0x20n,
  hwThermalSlowdown: 0x40n,
  hwPowerBrakeSlowdown: 0x80n,
  displayClockSetting: 0x100n,
} as const;

/**
 * Clock events that mean the hardware is in trouble. SW power cap (0x4) is not here: a GPU under
 * full load sits at its power limit all the time (the real H200 fixture under load shows 0x4), and
 * idle / application clocks / sync boost are normal operation.
 */
const UNHEALTHY_CLOCK_EVENTS: [bigint, string][] = [
  [CLOCK_EVENT.hwThermalSlowdown, "thermal throttling (HW thermal slowdown)"],
  [CLOCK_EVENT.swThermalSlowdown, "thermal throttling (SW thermal slowdown)"],
  [CLOCK_EVENT.hwPowerBrakeSlowdown, "HW power brake slowdown (external power brake asserted)"],
  [CLOCK_EVENT.hwSlowdown, "HW slowdown (clocks cut by hardware protection)"],
];

/**
 * The health verdict for one GPU. Decisions:
 * - any uncorrectable (volatile) ECC error is unhealthy: the running job's memory is suspect;
 * - a pending row remap or page retirement is unhealthy: it only takes effect after a GPU reset,
 *   and until then the bad memory is still in use, so the VM needs a reset before the next user;
 * - a failed row remap is unhealthy: the GPU cannot repair itself and needs replacing;
 * - `[GPU requires reset]` or `[Unknown Error]` in any field is unhealthy (the driver lost the GPU).
 */
export function assessGpu(
  gpu: ParsedGpu,
  thresholds: HealthThresholds = DEFAULT_THRESHOLDS,
): Health {
  const reasons: string[] = [];

  if (gpu.fieldErrors.some((e) => /requires reset/i.test(e.value))) {
    reasons.push("GPU requires reset");
  }
  const unreadable = gpu.fieldErrors.filter((e) => !/requires reset/i.test(e.value));
  if (unreadable.length > 0) {
    const detail = unreadable.map((e) => `${e.field} (${e.value})`).join(", ");
    reasons.push(`nvidia-smi could not read ${detail}`);
  }
  if (gpu.eccUncorrectedVolatile !== null && gpu.eccUncorrectedVolatile > 0) {
    reasons.push(`uncorrectable ECC errors: ${gpu.eccUncorrectedVolatile}`);
  }
  if (gpu.remappedRowsFailure) reasons.push("row remapping failed (GPU needs replacement)");
  if (gpu.remappedRowsPending) reasons.push("row remapping pending (GPU reset required)");
  if (gpu.retiredPagesPending) reasons.push("page retirement pending (GPU reset required)");
  if (gpu.temperatureC !== null && gpu.temperatureC > thresholds.gpuTempMaxC) {
    reasons.push(`temperature ${gpu.temperatureC} °C above ${thresholds.gpuTempMaxC} °C`);
  }
  if (gpu.memoryTemperatureC !== null && gpu.memoryTemperatureC > thresholds.gpuMemTempMaxC) {
    reasons.push(
      `memory temperature ${gpu.memoryTemperatureC} °C above ${thresholds.gpuMemTempMaxC} °C`,
    );
  }
  const events = gpu.clockEventReasons;
  if (events !== null) {
    for (const [bit, reason] of UNHEALTHY_CLOCK_EVENTS) {
      if ((events & bit) !== 0n) reasons.push(reason);
    }
  }
  return { healthy: reasons.length === 0, reasons };
}

const clamp = (n: number | null, min: number, max: number) =>
  n === null ? null : Math.min(max, Math.max(min, n));

/** Keeps reasons within the wire limits (200 characters each, `max` of them). */
export function limitReasons(reasons: string[], max: number): string[] {
  const unique = [...new Set(reasons)];
  const cut = unique.map((r) => (r.length > 200 ? `${r.slice(0, 197)}...` : r));
  if (cut.length <= max) return cut;
  return [...cut.slice(0, max - 1), `and ${cut.length - max + 1} more`];
}

/** Maps a parsed GPU and its verdict to the wire shape (clamped to the schema's bounds). */
export function toReading(gpu: ParsedGpu, health: Health): GpuReadingInput {
  return {
    index: Math.min(64, gpu.index),
    uuid: gpu.uuid?.slice(0, 128) ?? null,
    name: (gpu.name ?? "unknown GPU").slice(0, 128),
    temperatureC: clamp(gpu.temperatureC, -50, 200),
    utilizationPct: clamp(gpu.utilizationGpuPct, 0, 100),
    memoryUsedMiB: clamp(gpu.memoryUsedMiB, 0, 10_000_000),
    memoryTotalMiB: clamp(gpu.memoryTotalMiB, 0, 10_000_000),
    powerDrawW: clamp(gpu.powerDrawW, 0, 100_000),
    healthy: health.healthy,
    reasons: limitReasons(health.reasons, 20),
  };
}
