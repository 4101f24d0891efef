import { GPU_QUERY_FIELDS, type GpuQueryField } from "./query";

/** One GPU as nvidia-smi reported it. `null` = not available or not readable on this GPU. */
export type ParsedGpu = {
  index: number;
  uuid: string | null;
  name: string | null;
  driverVersion: string | null;
  temperatureC: number | null;
  utilizationGpuPct: number | null;
  utilizationMemoryPct: number | null;
  memoryUsedMiB: number | null;
  memoryTotalMiB: number | null;
  powerDrawW: number | null;
  powerLimitW: number | null;
  /** clocks_event_reasons.active bitmask (NVML nvmlClocksEventReason*). */
  clockEventReasons: bigint | null;
  eccUncorrectedVolatile: number | null;
  pcieGen: number | null;
  pcieWidth: number | null;
  smClockMHz: number | null;
  maxSmClockMHz: number | null;
  pstate: string | null;
  fanSpeedPct: number | null;
  retiredPagesPending: boolean | null;
  remappedRowsPending: boolean | null;
  remappedRowsFailure: boolean | null;
  memoryTemperatureC: number | null;
  /**
   * Fields nvidia-smi answered with an error rather than a value: `[Unknown Error]`,
   * `[GPU requires reset]`, or something unparseable. `[N/A]` and `[Not Supported]` are not errors
   * (many GPUs have no fan, a T4 has no memory temperature sensor).
   */
  fieldErrors: { field: GpuQueryField; value: string }[];
};

export type ParseResult = {
  gpus: ParsedGpu[];
  /** Lines that are not GPU rows (e.g. "Unable to determine the device handle for GPU ..."). */
  otherLines: string[];
};

const NOT_AVAILABLE = new Set(["[N/A]", "N/A", "[Not Supported]", "Not Supported", ""]);

type Cell = { field: GpuQueryField; raw: string };

class Row {
  readonly errors: ParsedGpu["fieldErrors"] = [];

  constructor(private readonly cells: Map<GpuQueryField, string>) {}

  /** The raw cell, or null for N/A; records bracketed error values such as `[Unknown Error]`. */
  private raw(field: GpuQueryField): string | null {
    const value = this.cells.get(field) ?? "";
    if (NOT_AVAILABLE.has(value)) return null;
    if (value.startsWith("[") && value.endsWith("]")) {
      this.errors.push({ field, value: value.slice(1, -1) });
      return null;
    }
    return value;
  }

  text(field: GpuQueryField): string | null {
    return this.raw(field);
  }

  number(field: GpuQueryField): number | null {
    const value = this.raw(field);
    if (value === null) return null;
    const n = Number(value);
    if (!Number.isFinite(n)) {
      this.errors.push({ field, value: `unparseable "${value.slice(0, 40)}"` });
      return null;
    }
    return n;
  }

  yesNo(field: GpuQueryField): boolean | null {
    const value = this.raw(field);
    if (value === null) return null;
    if (/^yes$/i.test(value)) return true;
    if (/^no$/i.test(value)) return false;
    this.errors.push({ field, value: `unparseable "${value.slice(0, 40)}"` });
    return null;
  }

  bitmask(field: GpuQueryField): bigint | null {
    const value = this.raw(field);
    if (value === null) return null;
    if (/^0x[0-9a-f]{1,16}$/i.test(value)) return BigInt(value);
    // "Not Active" is what some drivers print for an empty mask.
    if (/^not active$/i.test(value)) return 0n;
    this.errors.push({ field, value: `unparseable "${value.slice(0, 40)}"` });
    return null;
  }
}

function parseRow(cells: Cell[], position: number): ParsedGpu {
  const row = new Row(new Map(cells.map((c) => [c.field, c.raw])));
  const index = row.number("index");
  const gpu: Omit<ParsedGpu, "fieldErrors"> = {
    index: index !== null && Number.isInteger(index) && index >= 0 ? index : position,
    uuid: row.text("uuid"),
    name: row.text("name"),
    driverVersion: row.text("driver_version"),
    temperatureC: row.number("temperature.gpu"),
    utilizationGpuPct: row.number("utilization.gpu"),
    utilizationMemoryPct: row.number("utilization.memory"),
    memoryUsedMiB: row.number("memory.used"),
    memoryTotalMiB: row.number("memory.total"),
    powerDrawW: row.number("power.draw"),
    powerLimitW: row.number("power.limit"),
    clockEventReasons: row.bitmask("clocks_event_reasons.active"),
    eccUncorrectedVolatile: row.number("ecc.errors.uncorrected.volatile.total"),
    pcieGen: row.number("pcie.link.gen.current"),
    pcieWidth: row.number("pcie.link.width.current"),
    smClockMHz: row.number("clocks.sm"),
    maxSmClockMHz: row.number("clocks.max.sm"),
    pstate: row.text("pstate"),
    fanSpeedPct: row.number("fan.speed"),
    retiredPagesPending: row.yesNo("retired_pages.pending"),
    remappedRowsPending: row.yesNo("remapped_rows.pending"),
    remappedRowsFailure: row.yesNo("remapped_rows.failure"),
    memoryTemperatureC: row.number("temperature.memory"),
  };
  return { ...gpu, fieldErrors: row.errors };
}

/**
 * Parses `nvidia-smi --query-gpu=<GPU_QUERY_FIELDS> --format=csv,noheader,nounits`. Also accepts
 * the same output with a header line. Never throws: lines that are not GPU rows are returned in
 * `otherLines` so the caller can report them.
 */
export function parseGpuQuery(stdout: string): ParseResult {
  const gpus: ParsedGpu[] = [];
  const otherLines: string[] = [];
  for (const line of stdout.split(/\r?\n/)) {
    const trimmed = line.trim();
    if (!trimmed) continue;
    if (/^index\s*,/.test(trimmed)) continue; // header (csv without noheader)
    // GPU names and values contain no commas; splitting on "," and trimming tolerates ", " and ",".
    const values = trimmed.split(",").map((v) => v.trim());
    if (values.length !== GPU_QUERY_FIELDS.length || !/^\d+$/.test(values[0] ?? "")) {
      otherLines.push(trimmed);
      continue;
    }
    const cells = GPU_QUERY_FIELDS.map((field, i) => ({ field, raw: values[i] ?? "" }));
    gpus.push(parseRow(cells, gpus.length));
  }
  return { gpus, otherLines };
}
