import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { CommandProcessor } from "../src/commands";
import { DesktopHost } from "../src/desktop/host";
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

/** The VNC server's greeting on 127.0.0.1:port ("RFB 003.008\n"). */
function greeting(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host: "127.0.0.1", port });
    s.setTimeout(5_000, () => s.destroy(new Error("no greeting")));
    s.once("data", (b: Buffer) => {
      s.destroy();
      resolve(b.toString("latin1"));
    });
    s.once("error", reject);
  });
}

const which = (name: string) => {
  const r = spawnSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : null;
};

describe("the desktop's VNC server, for real", () => {
  // Both servers the agent can run: TigerVNC's Xvnc (preferred: the session takes the viewer's
  // size) and Xvfb served by x11vnc (the fallback). Each gets a PATH holding only its programs.
  for (const [server, programs] of [
    ["Xvnc", ["Xvnc", "xsetroot"]],
    ["Xvfb + x11vnc", ["Xvfb", "x11vnc", "xsetroot"]],
  ] as const) {
    it(`starts ${server} on 127.0.0.1, greets as VNC, and stops at wipe`, async () => {
      const bin = mkdtempSync(path.join(tmpdir(), "lablink-desktop-bin-"));
      const home = mkdtempSync(path.join(tmpdir(), "lablink-desktop-home-"));
      try {
        for (const p of programs) {
          const found = which(p);
          if (!found)
            throw new Error(
              `${p} is missing: sudo apt-get install -y tigervnc-standalone-server xvfb x11vnc x11-xserver-utils`,
            );
          symlinkSync(found, path.join(bin, p));
        }
        const host = new DesktopHost({
          mode: "auto",
          geometry: "800x600",
          log: silentLogger,
          path: bin,
        });
        expect(await host.start(A, { user: null, home })).toBe(true);
        const port = host.vncPort;
        if (!port) throw new Error("no VNC port");
        expect(await greeting(port)).toMatch(/^RFB 003\.00\d\n$/);
        await host.stop();
        expect(host.vncPort).toBeNull();
        await expect(greeting(port)).rejects.toThrow();
      } finally {
        rmSync(bin, { recursive: true, force: true });
        rmSync(home, { recursive: true, force: true });
      }
    }, 30_000);
  }
});
