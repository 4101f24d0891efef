import { describe, expect, it } from "vitest";
import { CommandProcessor } from "../src/commands";
import { DesktopUsage } from "../src/desktop/usage";
import { silentLogger } from "../src/log";
import type { UsageReport } from "../src/usage/detect";

const A = "11111111-1111-4111-8111-111111111111";
const R1 = "33333333-3333-4333-8333-333333333333";
const R2 = "44444444-4444-4444-8444-444444444444";
const gpus = {
  gpus: [],
  health: { healthy: true, reasons: [] },
  takenAt: new Date(),
  source: "none" as const,
};

describe("desktop viewers and idleness", () => {
  function setup(inner: UsageReport) {
    let now = 1_000_000;
    let viewers = 0;
    let report = inner;
    const usage = new DesktopUsage(
      { sample: async () => report },
      () => viewers,
      60_000,
      () => now,
    );
    return {
      usage,
      at: (t: number) => {
        now = t;
      },
      viewers: (n: number) => {
        viewers = n;
      },
      inner: (r: UsageReport) => {
        report = r;
      },
    };
  }

  it("a connected viewer makes the VM in use and not idle, whatever else says", async () => {
    const s = setup({ inUse: false, idleSince: new Date(0).toISOString(), signals: [] });
    s.viewers(1);
    expect(await s.usage.sample(gpus)).toEqual({
      inUse: true,
      idleSince: null,
      signals: ["desktop viewer"],
    });
  });

  it("with no viewer the desktop alone keeps nothing: the inner verdict stands", async () => {
    const idle = { inUse: false, idleSince: new Date(500_000).toISOString(), signals: [] };
    const s = setup(idle);
    expect(await s.usage.sample(gpus)).toEqual(idle);
  });

  it("after the last viewer leaves, idleness counts from then, not from before the visit", async () => {
    const s = setup({ inUse: false, idleSince: new Date(0).toISOString(), signals: [] });
    s.viewers(1);
    await s.usage.sample(gpus); // viewer seen at 1_000_000
    s.viewers(0);
    s.at(1_030_000);
    expect((await s.usage.sample(gpus)).idleSince).toBeNull();
    s.at(1_060_000);
    expect((await s.usage.sample(gpus)).idleSince).toBe(new Date(1_000_000).toISOString());
    // Something more recent than the viewer (inner idle since later): the inner verdict stands.
    s.inner({ inUse: false, idleSince: new Date(1_050_000).toISOString(), signals: [] });
    expect((await s.usage.sample(gpus)).idleSince).toBe(new Date(1_050_000).toISOString());
  });
});

describe("desktop commands", () => {
  it("opens each relay once, however often the server repeats it, and ignores malformed ids", () => {
    const opened: string[] = [];
    const processor = new CommandProcessor({
      actions: {
        assign: async () => {},
        wipe: async () => {},
        connect: async () => {},
      },
      ack: async () => {},
      onShutdown: () => {},
      onDesktop: (c) => opened.push(c.relayId),
      log: silentLogger,
    });
    const desktop = (relayId: string) => ({ type: "desktop" as const, relayId, assignmentId: A });
    expect(processor.accept([desktop(R1)])).toBe(1);
    expect(processor.accept([desktop(R1), desktop(R2)])).toBe(1);
    expect(processor.accept([desktop(R1), desktop(R2), desktop("not-a-uuid")])).toBe(0);
    expect(opened).toEqual([R1, R2]);
  });

  it("an agent without a desktop ignores the command", () => {
    const processor = new CommandProcessor({
      actions: { assign: async () => {}, wipe: async () => {}, connect: async () => {} },
      ack: async () => {},
      onShutdown: () => {},
      log: silentLogger,
    });
    expect(processor.accept([{ type: "desktop", relayId: R1, assignmentId: A }])).toBe(0);
  });
});
