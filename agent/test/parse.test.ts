import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { assessGpu, CLOCK_EVENT, DEFAULT_THRESHOLDS } from "../src/gpu/health";
import { parseGpuQuery } from "../src/gpu/parse";
import { assessGpuQuery, MESSAGES } from "../src/gpu/probe";
import { GPU_QUERY_FIELDS } from "../src/gpu/query";
import { FIXTURES, fixture } from "./helpers";

const ok = (stdout: string) => ({ kind: "ok" as const, stdout });
const assess = (stdout: string, expectedGpus: number | null = null) =>
  assessGpuQuery(ok(stdout), { thresholds: DEFAULT_THRESHOLDS, expectedGpus });

describe("parseGpuQuery on the real H200 captures", () => {
  it("reads every field of the idle capture", async () => {
    const { gpus, otherLines } = parseGpuQuery(await fixture("h200-idle.csv"));
    expect(otherLines).toEqual([]);
    expect(gpus).toEqual([
      {
        index: 0,
        uuid: "GPU-29e3d265-1384-0275-2a93-0d54c329e60d",
        name: "NVIDIA H200",
        driverVersion: "580.159.04",
        temperatureC: 37,
        utilizationGpuPct: 0,
        utilizationMemoryPct: 0,
        memoryUsedMiB: 0,
        memoryTotalMiB: 143771,
        powerDrawW: 125.9,
        powerLimitW: 700,
        clockEventReasons: CLOCK_EVENT.gpuIdle,
        eccUncorrectedVolatile: 0,
        pcieGen: 5,
        pcieWidth: 16,
        smClockMHz: 405,
        maxSmClockMHz: 1980,
        pstate: "P0",
        fanSpeedPct: null,
        retiredPagesPending: null,
        remappedRowsPending: false,
        remappedRowsFailure: false,
        memoryTemperatureC: 38,
        fieldErrors: [],
      },
    ]);
  });

  it("idle H200 is healthy and maps to the wire shape", async () => {
    const { gpus, health } = assess(await fixture("h200-idle.csv"));
    expect(health).toEqual({ healthy: true, reasons: [] });
    expect(gpus).toEqual([
      {
        index: 0,
        uuid: "GPU-29e3d265-1384-0275-2a93-0d54c329e60d",
        name: "NVIDIA H200",
        temperatureC: 37,
        utilizationPct: 0,
        memoryUsedMiB: 0,
        memoryTotalMiB: 143771,
        powerDrawW: 125.9,
        healthy: true,
        reasons: [],
      },
    ]);
  });

  it("H200 under load sits at its power cap (0x4) and that is healthy", async () => {
    const [gpu] = parseGpuQuery(await fixture("h200-load.csv")).gpus;
    expect(gpu?.clockEventReasons).toBe(CLOCK_EVENT.swPowerCap);
    expect(gpu).toMatchObject({ temperatureC: 53, utilizationGpuPct: 100, powerDrawW: 460.21 });
    expect(assess(await fixture("h200-load.csv")).health).toEqual({ healthy: true, reasons: [] });
  });

  it("skips the header line of csv output without noheader", async () => {
    const { gpus, otherLines } = parseGpuQuery(await fixture("h200-idle-header.csv"));
    expect(otherLines).toEqual([]);
    expect(gpus).toHaveLength(1);
    expect(gpus[0]).toMatchObject({ index: 0, powerDrawW: 124.14, temperatureC: 37 });
  });

  it("the header capture names the same fields in the same order as GPU_QUERY_FIELDS", async () => {
    const header = (await fixture("h200-idle-header.csv")).split("\n")[0] ?? "";
    const names = header.split(", ").map((h) => h.replace(/ \[.*\]$/, ""));
    // nvidia-smi prints clocks.sm under its long name.
    expect(names).toEqual(
      GPU_QUERY_FIELDS.map((f) => (f === "clocks.sm" ? "clocks.current.sm" : f)),
    );
  });
});

describe("parseGpuQuery and health on hand-written fixtures", () => {
  it("T4: page retirement field read, row remap fields N/A, healthy", async () => {
    const [gpu] = parseGpuQuery(await fixture("t4-idle.csv")).gpus;
    expect(gpu).toMatchObject({
      name: "Tesla T4",
      memoryTotalMiB: 15360,
      powerLimitW: 70,
      pstate: "P8",
      retiredPagesPending: false,
      remappedRowsPending: null,
      remappedRowsFailure: null,
      memoryTemperatureC: null,
      fanSpeedPct: null,
      fieldErrors: [],
    });
    expect(assess(await fixture("t4-idle.csv")).health.healthy).toBe(true);
  });

  it("A10G under load is healthy", async () => {
    const { gpus, health } = assess(await fixture("a10g-load.csv"));
    expect(health.healthy).toBe(true);
    expect(gpus[0]).toMatchObject({
      name: "NVIDIA A10G",
      utilizationPct: 99,
      memoryUsedMiB: 20112,
      memoryTotalMiB: 23028,
      powerDrawW: 296.41,
    });
  });

  it("4x A100: GPU 2 with uncorrectable ECC errors and a pending row remap is unhealthy", async () => {
    const { gpus, health } = assess(await fixture("a100-4x-ecc.csv"), 4);
    expect(gpus.map((g) => g.healthy)).toEqual([true, true, false, true]);
    expect(gpus[2]?.reasons).toEqual([
      "uncorrectable ECC errors: 2",
      "row remapping pending (GPU reset required)",
    ]);
    expect(health).toEqual({
      healthy: false,
      reasons: [
        "GPU 2: uncorrectable ECC errors: 2",
        "GPU 2: row remapping pending (GPU reset required)",
      ],
    });
  });

  it("8x H100: the thermally throttled GPU 5 is unhealthy, power-capped ones are not", async () => {
    const { gpus, health } = assess(await fixture("h100-8x-load-thermal.csv"), 8);
    expect(gpus).toHaveLength(8);
    expect(gpus.filter((g) => !g.healthy).map((g) => g.index)).toEqual([5]);
    expect(gpus[5]?.reasons).toEqual([
      "temperature 91 °C above 90 °C",
      "thermal throttling (HW thermal slowdown)",
      "HW slowdown (clocks cut by hardware protection)",
    ]);
    expect(health.healthy).toBe(false);
    expect(health.reasons).toContain("GPU 5: thermal throttling (HW thermal slowdown)");
  });

  it("clock event bits: thermal, HW slowdown and power brake are unhealthy; idle, power cap, sync boost are not", async () => {
    const { gpus } = assess(await fixture("h100-8x-clock-events.csv"));
    const byIndex = gpus.map((g) => [g.index, g.reasons]);
    expect(byIndex).toEqual([
      [0, []],
      [1, []],
      [2, ["thermal throttling (SW thermal slowdown)"]],
      [
        3,
        [
          "thermal throttling (HW thermal slowdown)",
          "HW slowdown (clocks cut by hardware protection)",
        ],
      ],
      [
        4,
        [
          "HW power brake slowdown (external power brake asserted)",
          "HW slowdown (clocks cut by hardware protection)",
        ],
      ],
      [5, ["HW slowdown (clocks cut by hardware protection)"]],
      [6, []],
      [7, []],
    ]);
  });

  it("[N/A] and [Not Supported] become null and are not failures", async () => {
    const [gpu] = parseGpuQuery(await fixture("l4-na-values.csv")).gpus;
    expect(gpu).toMatchObject({
      utilizationGpuPct: null,
      utilizationMemoryPct: null,
      powerDrawW: null,
      powerLimitW: null,
      clockEventReasons: null,
      eccUncorrectedVolatile: null,
      remappedRowsPending: null,
      fieldErrors: [],
    });
    const { gpus, health } = assess(await fixture("l4-na-values.csv"));
    expect(health.healthy).toBe(true);
    expect(gpus[0]).toMatchObject({ utilizationPct: null, powerDrawW: null, temperatureC: 41 });
  });

  it("[Unknown Error] and [GPU requires reset] make a GPU unhealthy and name the fields", async () => {
    const parsed = parseGpuQuery(await fixture("a100-2x-error-values.csv"));
    expect(parsed.otherLines).toEqual([]);
    expect(parsed.gpus[0]?.temperatureC).toBeNull();
    expect(parsed.gpus[0]?.fieldErrors).toEqual([
      { field: "temperature.gpu", value: "Unknown Error" },
      { field: "power.draw", value: "Unknown Error" },
    ]);
    const { gpus, health } = assess(await fixture("a100-2x-error-values.csv"));
    expect(gpus[0]?.reasons).toEqual([
      "nvidia-smi could not read temperature.gpu (Unknown Error), power.draw (Unknown Error)",
    ]);
    expect(gpus[1]?.reasons).toEqual(["GPU requires reset"]);
    expect(gpus[1]).toMatchObject({
      name: "NVIDIA A100-SXM4-80GB",
      memoryTotalMiB: 81920,
      temperatureC: null,
    });
    expect(health.healthy).toBe(false);
  });

  it("every fixture line that looks like a GPU row has exactly the queried number of fields", () => {
    for (const name of readdirSync(FIXTURES).filter((f) => /\.(csv|txt)$/.test(f))) {
      if (name.includes("compute-apps") || name.includes("summary")) continue;
      const text = readFileSync(`${FIXTURES}/${name}`, "utf8");
      for (const line of text.split("\n").filter((l) => /^\d+, GPU-/.test(l))) {
        expect(line.split(", "), `${name}: ${line.slice(0, 40)}`).toHaveLength(
          GPU_QUERY_FIELDS.length,
        );
      }
    }
  });
});

describe("VM-level verdicts", () => {
  it("a GPU missing from the list: other GPUs still reported, the error line and the count are reasons", async () => {
    const output = await fixture("a100-4x-gpu-lost.txt");
    const { gpus, health } = assessGpuQuery(
      { kind: "failed", exitCode: 15, signal: null, output },
      { thresholds: DEFAULT_THRESHOLDS, expectedGpus: 4 },
    );
    expect(gpus.map((g) => g.index)).toEqual([0, 1, 3]);
    expect(health).toEqual({
      healthy: false,
      reasons: [
        "nvidia-smi failed (exit 15): Unable to determine the device handle for GPU0000:00:1E.0: Unknown Error",
        "3 of 4 expected GPUs visible",
      ],
    });
  });

  it("the same output with exit 0 still reports the odd line", async () => {
    const { health } = assess(await fixture("a100-4x-gpu-lost.txt"), 4);
    expect(health.reasons).toEqual([
      "nvidia-smi: Unable to determine the device handle for GPU0000:00:1E.0: Unknown Error",
      "3 of 4 expected GPUs visible",
    ]);
  });

  it("driver not loaded (exit 9)", async () => {
    const output = await fixture("error-no-driver.txt");
    const { gpus, health } = assessGpuQuery(
      { kind: "failed", exitCode: 9, signal: null, output },
      { thresholds: DEFAULT_THRESHOLDS, expectedGpus: null },
    );
    expect(gpus).toEqual([]);
    expect(health.healthy).toBe(false);
    expect(health.reasons[0]).toBe(
      "nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.",
    );
  });

  it("unknown field (real message, exit 2)", async () => {
    const output = await fixture("error-bogus-field.txt");
    const { health } = assessGpuQuery(
      { kind: "failed", exitCode: 2, signal: null, output },
      { thresholds: DEFAULT_THRESHOLDS, expectedGpus: null },
    );
    expect(health.reasons[0]).toBe(
      'nvidia-smi failed (exit 2): Field "bogus.field" is not a valid field to query.',
    );
  });

  it("no devices (exit 6)", async () => {
    const output = await fixture("error-no-devices.txt");
    const { health } = assessGpuQuery(
      { kind: "failed", exitCode: 6, signal: null, output },
      { thresholds: DEFAULT_THRESHOLDS, expectedGpus: null },
    );
    expect(health.reasons).toEqual([
      "nvidia-smi failed (exit 6): No devices were found",
      MESSAGES.noGpus,
    ]);
  });

  it("no nvidia-smi, timeout, spawn error", () => {
    const o = { thresholds: DEFAULT_THRESHOLDS, expectedGpus: 1 };
    expect(assessGpuQuery({ kind: "not-found" }, o).health).toEqual({
      healthy: false,
      reasons: ["no NVIDIA driver (nvidia-smi not found)"],
    });
    expect(assessGpuQuery({ kind: "timeout", stillRunning: false }, o).health).toEqual({
      healthy: false,
      reasons: ["nvidia-smi timed out (hung driver?)"],
    });
    expect(
      assessGpuQuery({ kind: "spawn-error", code: "EACCES", message: "spawn EACCES" }, o).health
        .reasons,
    ).toEqual(["cannot run nvidia-smi (EACCES)"]);
  });

  it("empty output with exit 0 means no GPUs; fewer than expected is unhealthy", async () => {
    expect(assess("").health.reasons).toEqual(["no GPUs visible"]);
    expect(assess(await fixture("h200-idle.csv"), 2).health.reasons).toEqual([
      "1 of 2 expected GPUs visible",
    ]);
    expect(assess("", 0).health.healthy).toBe(true);
  });

  it("Xid reasons from the kernel log are added to the VM verdict", async () => {
    const { health } = assessGpuQuery(ok(await fixture("h200-idle.csv")), {
      thresholds: DEFAULT_THRESHOLDS,
      expectedGpus: null,
      extraReasons: ["Xid 79 on PCI:0000:00:06: GPU has fallen off the bus."],
    });
    expect(health).toEqual({
      healthy: false,
      reasons: ["Xid 79 on PCI:0000:00:06: GPU has fallen off the bus."],
    });
  });
});

describe("assessGpu thresholds and edge cases", () => {
  const base = parseGpuQuery(
    "0, GPU-x, NVIDIA H100 80GB HBM3, 550.90.07, 60, 0, 0, 0, 81559, 70.00, 700.00, 0x0000000000000001, 0, 5, 16, 345, 1980, P0, [N/A], [N/A], No, No, 50",
  ).gpus[0];
  if (!base) throw new Error("fixture line did not parse");

  it("temperature threshold is configurable and strict (> not >=)", () => {
    expect(assessGpu({ ...base, temperatureC: 90 }).healthy).toBe(true);
    expect(assessGpu({ ...base, temperatureC: 91 }).reasons).toEqual([
      "temperature 91 °C above 90 °C",
    ]);
    expect(
      assessGpu({ ...base, temperatureC: 80 }, { gpuTempMaxC: 75, gpuMemTempMaxC: 95 }).healthy,
    ).toBe(false);
    expect(assessGpu({ ...base, memoryTemperatureC: 99 }).reasons).toEqual([
      "memory temperature 99 °C above 95 °C",
    ]);
  });

  it("failed row remapping and pending page retirement", () => {
    expect(assessGpu({ ...base, remappedRowsFailure: true }).reasons).toEqual([
      "row remapping failed (GPU needs replacement)",
    ]);
    expect(assessGpu({ ...base, retiredPagesPending: true }).reasons).toEqual([
      "page retirement pending (GPU reset required)",
    ]);
  });

  it("unparseable values are field errors, not crashes; comma without space is accepted", () => {
    const { gpus } = parseGpuQuery(
      "0,GPU-x,NVIDIA H100,550.90.07,hot,0,0,0,81559,70.00,700.00,0xZZ,0,5,16,345,1980,P0,[N/A],[N/A],Maybe,No,50\r\n",
    );
    expect(gpus[0]?.fieldErrors.map((e) => e.field)).toEqual([
      "temperature.gpu",
      "clocks_event_reasons.active",
      "remapped_rows.pending",
    ]);
    expect(gpus[0]?.name).toBe("NVIDIA H100");
  });

  it("values outside the wire schema's bounds are clamped", () => {
    const { gpus } = assess(
      "0, GPU-x, NVIDIA H100, 550.90.07, 60, 101, 0, 0, 81559, 70.00, 700.00, 0x1, 0, 5, 16, 345, 1980, P0, [N/A], [N/A], No, No, 50",
    );
    expect(gpus[0]?.utilizationPct).toBe(100);
  });
});
