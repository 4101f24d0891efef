import { createHash } from "node:crypto";
import type { GpuReadingInput } from "../../../server/protocol/agent";

type Model = { name: string; memoryTotalMiB: number; idleW: number; maxW: number };

/** memory.total and power figures as nvidia-smi reports them on these cards. */
const MODELS: Model[] = [
  { name: "Tesla T4", memoryTotalMiB: 15_360, idleW: 10, maxW: 70 },
  { name: "NVIDIA A10G", memoryTotalMiB: 23_028, idleW: 25, maxW: 300 },
  { name: "NVIDIA L4", memoryTotalMiB: 23_034, idleW: 16, maxW: 72 },
  { name: "NVIDIA A100-SXM4-40GB", memoryTotalMiB: 40_960, idleW: 55, maxW: 400 },
  { name: "NVIDIA A100-SXM4-80GB", memoryTotalMiB: 81_920, idleW: 60, maxW: 400 },
  { name: "NVIDIA H100 80GB HBM3", memoryTotalMiB: 81_559, idleW: 70, maxW: 700 },
  { name: "NVIDIA H200", memoryTotalMiB: 143_771, idleW: 75, maxW: 700 },
];

function findModel(requested: string): Model {
  const want = requested.toLowerCase().replace(/^nvidia\s+/, "");
  const known = MODELS.find((m) => m.name.toLowerCase().includes(want));
  return { ...(known ?? { memoryTotalMiB: 24_576, idleW: 20, maxW: 300 }), name: requested };
}

/** A stable GPU UUID per (VM, index), in nvidia-smi's "GPU-xxxxxxxx-xxxx-..." form. */
function gpuUuid(vmId: string, index: number): string {
  const h = createHash("sha256").update(`${vmId}:${index}`).digest("hex");
  return `GPU-${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

type GpuState = { util: number; temp: number; memUsed: number };

/**
 * Plausible, slowly varying readings for the local fleet: idle GPUs sit near 0 % and ~30-40 °C,
 * GPUs of a VM in use drift to high utilisation, warmer temperatures and more memory and power.
 * Always healthy; a later issue can add fault injection.
 */
export class SimulatedGpus {
  private readonly model: Model;
  private readonly states: GpuState[];

  constructor(
    private readonly options: {
      model: string;
      count: number;
      vmId: string;
      random?: () => number;
    },
  ) {
    this.model = findModel(options.model);
    const random = options.random ?? Math.random;
    this.states = Array.from({ length: options.count }, () => ({
      util: 0,
      temp: 30 + random() * 6,
      memUsed: 0,
    }));
  }

  /** Advances the simulation one step and returns readings. */
  read(inUse: boolean): GpuReadingInput[] {
    const random = this.options.random ?? Math.random;
    const m = this.model;
    return this.states.map((s, index) => {
      const targetUtil = inUse ? 70 + random() * 30 : random() * 2;
      s.util = Math.min(100, Math.max(0, s.util + (targetUtil - s.util) * 0.5));
      const targetTemp = 30 + s.util * 0.45 + random() * 3;
      s.temp += (targetTemp - s.temp) * 0.3;
      const targetMem = inUse ? m.memoryTotalMiB * (0.4 + random() * 0.4) : 0;
      s.memUsed += (targetMem - s.memUsed) * 0.5;
      const power = m.idleW + (m.maxW - m.idleW) * (s.util / 100) * (0.85 + random() * 0.1);
      return {
        index,
        uuid: gpuUuid(this.options.vmId, index),
        name: m.name,
        temperatureC: Math.round(s.temp),
        utilizationPct: Math.round(s.util),
        memoryUsedMiB: Math.round(s.memUsed),
        memoryTotalMiB: m.memoryTotalMiB,
        powerDrawW: Math.round(power * 100) / 100,
        healthy: true,
        reasons: [],
      };
    });
  }
}
