import type { GpuSnapshot } from "../gpu/probe";
import type { UsageReport } from "../usage/detect";
import type { UsageSource } from "../usage/monitor";

/**
 * A connected desktop viewer keeps the VM in use (and not idle); the desktop's own programs do
 * not. Once the last viewer leaves, the VM goes idle after the usual idle time counted from then,
 * unless the inner source saw something more recent.
 */
export class DesktopUsage implements UsageSource {
  private lastViewerAt: number | null = null;

  constructor(
    private readonly inner: UsageSource,
    private readonly viewers: () => number,
    private readonly idleAfterMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  async sample(gpus: GpuSnapshot): Promise<UsageReport> {
    const report = await this.inner.sample(gpus);
    const at = this.now();
    if (this.viewers() > 0) {
      this.lastViewerAt = at;
      return { inUse: true, idleSince: null, signals: [...report.signals, "desktop viewer"] };
    }
    const last = this.lastViewerAt;
    if (last === null || report.idleSince === null || Date.parse(report.idleSince) >= last) {
      return report;
    }
    // Idle by the inner rules, but a viewer was here more recently than it says.
    return {
      ...report,
      idleSince: at - last >= this.idleAfterMs ? new Date(last).toISOString() : null,
    };
  }
}
