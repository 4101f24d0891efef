import { describe, expect, it } from "vitest";
import { parseXidLine, parseXidLog, xidReasons } from "../src/gpu/xid";

describe("parseXidLine", () => {
  it("reads a current-driver line with pid", () => {
    expect(
      parseXidLine(
        "[ 2475.423614] NVRM: Xid (PCI:0000:00:06): 79, pid=1234, GPU has fallen off the bus.",
      ),
    ).toEqual({
      pci: "0000:00:06",
      xid: 79,
      detail: "GPU has fallen off the bus.",
      uptimeS: 2475.423614,
    });
  });

  it("drops pid and process name (they belong to the user)", () => {
    expect(
      parseXidLine(
        "[1234567.890123] NVRM: Xid (PCI:0000:3b:00): 48, pid=4567, name=python3, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.",
      ),
    ).toMatchObject({
      pci: "0000:3b:00",
      xid: 48,
      detail:
        "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.",
    });
    expect(
      parseXidLine(
        "NVRM: Xid (PCI:0000:1b:00): 63, pid='<unknown>', name=<unknown>, Row Remapper: New row (0x00000000000a7d80) marked for remapping, reset gpu to activate.",
      ),
    ).toMatchObject({
      xid: 63,
      detail:
        "Row Remapper: New row (0x00000000000a7d80) marked for remapping, reset gpu to activate.",
      uptimeS: null,
    });
  });

  it("reads old-format lines without PCI: and pid", () => {
    expect(
      parseXidLine("NVRM: Xid (0000:03:00): 13, 0003 00000000 0000a1c0 00000050 00000000"),
    ).toEqual({
      pci: "0000:03:00",
      xid: 13,
      detail: "0003 00000000 0000a1c0 00000050 00000000",
      uptimeS: null,
    });
  });

  it("reads journalctl -k style lines (prefix before NVRM)", () => {
    expect(
      parseXidLine(
        "Nov 27 07:28:45 gpu-vm kernel: NVRM: Xid (PCI:0000:00:1e): 119, pid=812, name=nvidia-smi, Timeout after 6s of waiting for RPC response from GPU0 GSP!",
      ),
    ).toMatchObject({
      pci: "0000:00:1e",
      xid: 119,
      detail: "Timeout after 6s of waiting for RPC response from GPU0 GSP!",
    });
  });

  it("ignores other NVRM and kernel lines", () => {
    expect(
      parseXidLine("[    5.1] NVRM: loading NVIDIA UNIX x86_64 Kernel Module  580.159.04"),
    ).toBeNull();
    expect(
      parseXidLine("[    6.2] NVRM: GPU 0000:00:06.0: RmInitAdapter failed! (0x24:0x65:1457)"),
    ).toBeNull();
    expect(parseXidLine("")).toBeNull();
    expect(parseXidLine("NVRM: Xid (PCI:0000:00:06): notanumber")).toBeNull();
  });
});

describe("xidReasons", () => {
  const log = [
    "[  100.0] NVRM: Xid (PCI:0000:00:06): 13, pid=1, name=python3, Graphics SM Warp Exception",
    "[  200.0] NVRM: Xid (PCI:0000:00:06): 31, pid=1, name=python3, MMU Fault",
    "[  300.0] NVRM: Xid (PCI:0000:3b:00): 48, pid=1, name=python3, An uncorrectable double bit error",
    "[  400.0] NVRM: Xid (PCI:0000:3b:00): 48, pid=2, name=python3, An uncorrectable double bit error",
    "[ 5000.0] NVRM: Xid (PCI:0000:00:06): 79, pid=1234, GPU has fallen off the bus.",
    "NVRM: Xid (PCI:0000:86:00): 94, Contained: SM (0x1). RST: No, D-RST: No",
  ].join("\n");

  it("counts hardware Xids only, grouped per GPU, within the window", () => {
    const events = parseXidLog(log);
    expect(events).toHaveLength(6);
    expect(xidReasons(events, { nowUptimeS: 5100, windowS: 3600 })).toEqual([
      "Xid 79 on PCI:0000:00:06: GPU has fallen off the bus.",
      "Xid 94 on PCI:0000:86:00: Contained: SM (0x1). RST: No, D-RST: No",
    ]);
    expect(xidReasons(events, { nowUptimeS: 1000, windowS: 3600 })).toEqual([
      "Xid 48 on PCI:0000:3b:00 (2x): An uncorrectable double bit error",
      "Xid 79 on PCI:0000:00:06: GPU has fallen off the bus.",
      "Xid 94 on PCI:0000:86:00: Contained: SM (0x1). RST: No, D-RST: No",
    ]);
  });

  it("falls back to a description when the driver printed none", () => {
    const events = parseXidLog("NVRM: Xid (PCI:0000:00:06): 79");
    expect(xidReasons(events, { nowUptimeS: 0, windowS: 60 })).toEqual([
      "Xid 79 on PCI:0000:00:06: GPU has fallen off the bus",
    ]);
  });
});
