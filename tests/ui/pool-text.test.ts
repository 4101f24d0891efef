import { describe, expect, it } from "vitest";
import { aboutMinutes, duration, outlookText, poolMessage } from "../../app/_components/pool-text";
import type { PoolFleet, PoolSummary } from "../../server/domain/pool";

const capacity = { ready: 0, booting: 0, inUse: 0, unhealthy: 0, draining: 0, total: 0 };
const fleet = (over: Partial<PoolFleet>): PoolFleet => ({
  fleetId: crypto.randomUUID(),
  name: "a10",
  instanceType: "g5.xlarge",
  gpuModel: "NVIDIA A10G",
  gpuCount: 1,
  status: "active",
  medianBootSeconds: null,
  operation: null,
  outlook: { kind: "available" },
  quota: null,
  ...capacity,
  ...over,
});
const pool = (fleets: PoolFleet[], otherGroupsFleets = 0): PoolSummary => ({
  fleets,
  otherGroupsFleets,
  totals: {
    ...capacity,
    ready: fleets.reduce((n, f) => n + f.ready, 0),
  },
});

describe("what the pool view says", () => {
  it("rounds waits up to the minute", () => {
    expect(aboutMinutes(10)).toBe("about 1 min");
    expect(aboutMinutes(230)).toBe("about 4 min");
    expect(aboutMinutes(80 * 60)).toBe("about 1 h 20 min");
    expect(aboutMinutes(120 * 60)).toBe("about 2 h");
  });

  it("says when booting VMs are usually ready, and what a running operation is doing", () => {
    expect(outlookText({ kind: "booting", booting: 3, etaSeconds: 230 })).toBe(
      "3 VMs are starting up, usually ready in about 4 min.",
    );
    expect(outlookText({ kind: "booting", booting: 1, etaSeconds: null })).toBe(
      "1 VM is starting up.",
    );
    expect(
      outlookText({
        kind: "scaling",
        operation: { kind: "fleet.scale", status: "running", progress: { done: 1, total: 4 } },
      }),
    ).toBe("The fleet is being resized: 1 of 4 steps done; new VMs will appear here.");
    expect(outlookText({ kind: "available" })).toBeNull();
  });

  it("explains an impossible claim for the pool as a whole", () => {
    expect(poolMessage(pool([], 2))).toMatch(/No fleet is open to your groups/);
    expect(poolMessage(pool([]))).toMatch(/no GPU fleets yet/);
    expect(poolMessage(pool([fleet({ ready: 1 })]))).toBeNull();
    expect(
      poolMessage(
        pool([
          fleet({ outlook: { kind: "booting", booting: 2, etaSeconds: 600 } }),
          fleet({ outlook: { kind: "booting", booting: 1, etaSeconds: 240 } }),
        ]),
      ),
    ).toBe("No VM is free right now. 3 VMs are starting up, usually ready in about 4 min.");
    expect(poolMessage(pool([fleet({ outlook: { kind: "full" } })]))).toMatch(/every VM is in use/);
    expect(poolMessage(pool([fleet({ outlook: { kind: "out_of_service" } })]))).toMatch(
      /none is in service/,
    );
  });

  it("writes held and remaining time for people", () => {
    expect(duration(30_000)).toBe("under a minute");
    expect(duration(14 * 60_000 + 59_000)).toBe("14 min");
    expect(duration(125 * 60_000)).toBe("2 h 05 min");
    expect(duration((26 * 60 + 3) * 60_000)).toBe("1 d 2 h 03 min");
    expect(duration(-5_000)).toBe("under a minute");
  });
});
