/**
 * NVIDIA Xid events from the kernel log. The driver prints one line per event, e.g.
 *   [ 2475.423614] NVRM: Xid (PCI:0000:00:06): 79, pid=1234, GPU has fallen off the bus.
 * Older drivers omit "PCI:" and the pid. Only hardware Xids make a VM unhealthy; most others
 * (13, 31, 43, 45, ...) are raised by a faulty user program and say nothing about the GPU.
 */
export type XidEvent = {
  /** PCI address as printed, e.g. "0000:00:06". */
  pci: string;
  xid: number;
  /** The driver's text after the pid/name fields, e.g. "GPU has fallen off the bus." */
  detail: string;
  /** Seconds since boot from dmesg's "[ 123.456]" prefix; null when the line has none. */
  uptimeS: number | null;
};

/** Xids that point at the GPU or its memory/links, with a short description for admins. */
export const HARDWARE_XIDS: Readonly<Record<number, string>> = {
  48: "double-bit ECC error",
  62: "internal micro-controller halt",
  63: "ECC page retirement / row remap recorded (GPU reset required)",
  64: "ECC page retirement / row remap recording failed",
  74: "NVLink error",
  79: "GPU has fallen off the bus",
  92: "high single-bit ECC error rate",
  94: "contained ECC error",
  95: "uncontained ECC error",
  119: "GSP RPC timeout",
  120: "GSP error",
  140: "unrecovered ECC error",
};

const XID_LINE = /NVRM: Xid \((?:PCI:)?([0-9A-Fa-f:.]+)\):\s*(\d+)(?:,\s*(.*))?$/;
const UPTIME_PREFIX = /^\s*\[\s*(\d+(?:\.\d+)?)\]/;

/** Parses one kernel log line; null when it is not an Xid line. */
export function parseXidLine(line: string): XidEvent | null {
  const m = XID_LINE.exec(line.trim());
  if (!m?.[1] || !m[2]) return null;
  const uptime = UPTIME_PREFIX.exec(line);
  const detail = (m[3] ?? "")
    // Drop the "pid=1234, name=python3, " prefix newer drivers add; it names the user's process.
    .replace(/^pid=[^,]*,\s*/, "")
    .replace(/^name=[^,]*,\s*/, "")
    .trim();
  return {
    pci: m[1],
    xid: Number(m[2]),
    detail,
    uptimeS: uptime?.[1] ? Number(uptime[1]) : null,
  };
}

export function parseXidLog(text: string): XidEvent[] {
  const events: XidEvent[] = [];
  for (const line of text.split(/\r?\n/)) {
    const event = parseXidLine(line);
    if (event) events.push(event);
  }
  return events;
}

/**
 * Health reasons for hardware Xids seen within `windowS` seconds of `nowUptimeS` (events without
 * a timestamp always count). One reason per (Xid, PCI address), with a count when repeated.
 */
export function xidReasons(
  events: XidEvent[],
  options: { nowUptimeS: number; windowS: number },
): string[] {
  const groups = new Map<string, { event: XidEvent; count: number }>();
  for (const event of events) {
    if (!(event.xid in HARDWARE_XIDS)) continue;
    if (event.uptimeS !== null && options.nowUptimeS - event.uptimeS > options.windowS) continue;
    const key = `${event.xid}@${event.pci}`;
    const group = groups.get(key);
    if (group) {
      group.count += 1;
      group.event = event; // keep the latest text
    } else {
      groups.set(key, { event, count: 1 });
    }
  }
  return [...groups.values()].map(({ event, count }) => {
    const times = count > 1 ? ` (${count}x)` : "";
    const what = event.detail || HARDWARE_XIDS[event.xid];
    return `Xid ${event.xid} on PCI:${event.pci}${times}: ${what}`;
  });
}
