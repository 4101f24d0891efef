import { describe, expect, it } from "vitest";
import {
  backoffSeconds,
  planWarmPool,
  type WarmPoolInput,
  warmPoolPolicySchema,
} from "./warm-pool";

const now = new Date("2026-12-01T10:00:00Z");
const policy = warmPoolPolicySchema.parse({ desiredReady: 2, maxSize: 6 });
const counts = { ready: 2, booting: 0, held: 0, failed: 0, total: 2 };
const noFailures = { consecutive: 0, lastAt: null };

function plan(over: Partial<WarmPoolInput> = {}) {
  return planWarmPool({ now, policy, counts, failures: noFailures, ...over });
}

describe("planWarmPool", () => {
  it("keeps held + desired ready: a claimed VM raises the target so a new one boots", () => {
    const p = plan({ counts: { ready: 1, booting: 0, held: 1, failed: 0, total: 2 } });
    expect(p).toMatchObject({ targetSize: 3, status: "ok", reason: null, replaceFailed: false });
  });

  it("fills the defaults and an empty fleet grows to the ready count", () => {
    expect(policy).toMatchObject({ paused: false, backoffBaseS: 60, backoffMaxS: 3600 });
    expect(plan({ counts: { ready: 0, booting: 0, held: 0, failed: 0, total: 0 } })).toMatchObject({
      targetSize: 2,
      status: "ok",
    });
  });

  it("stops at the maximum size and says so", () => {
    const p = plan({ counts: { ready: 1, booting: 0, held: 5, failed: 0, total: 6 } });
    expect(p.targetSize).toBe(6);
    expect(p.status).toBe("at_max");
    expect(p.reason).toMatch(/maximum size of 6/);
  });

  it("asks to replace failed VMs", () => {
    const p = plan({ counts: { ready: 1, booting: 0, held: 0, failed: 1, total: 2 } });
    expect(p).toMatchObject({ replaceFailed: true, status: "ok", targetSize: 2 });
  });

  it("paused: keeps the current size, replaces nothing, gives the admin's reason", () => {
    const p = plan({
      policy: { ...policy, paused: true, pausedReason: "AMI broken" },
      counts: { ready: 0, booting: 0, held: 3, failed: 1, total: 4 },
    });
    expect(p).toMatchObject({ targetSize: 4, replaceFailed: false, status: "paused" });
    expect(p.reason).toContain("AMI broken");
  });

  it("backs off exponentially: the wait doubles with each failure, up to the cap", () => {
    expect([1, 2, 3, 4].map((n) => backoffSeconds(policy, n))).toEqual([60, 120, 240, 480]);
    expect(backoffSeconds({ backoffBaseS: 60, backoffMaxS: 300 }, 4)).toBe(300);
    expect(backoffSeconds(policy, 1000)).toBe(3600);

    const short = { ready: 0, booting: 0, held: 0, failed: 0, total: 0 };
    const lastAt = new Date(now.getTime() - 100_000); // 100 s ago
    const one = plan({ counts: short, failures: { consecutive: 1, lastAt } });
    // 60 s after one failure: over, so growth may go on.
    expect(one).toMatchObject({ status: "ok", targetSize: 2 });
    const two = plan({ counts: short, failures: { consecutive: 2, lastAt } });
    // 120 s after two failures: 20 s left, no growth.
    expect(two.status).toBe("backoff");
    expect(two.targetSize).toBe(0);
    expect(two.retryAt?.toISOString()).toBe("2026-12-01T10:00:20.000Z");
    expect(two.reason).toMatch(
      /Backing off until 2026-12-01T10:00:20.000Z after 2 failed launches/,
    );
  });

  it("still shrinks while backing off", () => {
    const p = plan({
      counts: { ready: 4, booting: 0, held: 0, failed: 0, total: 4 },
      failures: { consecutive: 2, lastAt: now },
    });
    expect(p).toMatchObject({ status: "backoff", targetSize: 2 });
    // A failed VM keeps its slot: shrinking must not take the working VM instead.
    const withFailed = plan({
      counts: { ready: 2, booting: 0, held: 0, failed: 1, total: 3 },
      failures: { consecutive: 1, lastAt: now },
    });
    expect(withFailed).toMatchObject({ status: "backoff", targetSize: 3, replaceFailed: false });
  });

  it("gives up at the hard failure limit, whatever the backoff", () => {
    const p = plan({
      counts: { ready: 0, booting: 0, held: 0, failed: 1, total: 1 },
      failures: { consecutive: 5, lastAt: new Date(0) },
    });
    expect(p).toMatchObject({ status: "gave_up", replaceFailed: false, targetSize: 1 });
    expect(p.reason).toMatch(/5 failed launches/);
  });

  it("refuses policies that make no sense", () => {
    expect(warmPoolPolicySchema.safeParse({ desiredReady: -1, maxSize: 2 }).success).toBe(false);
    expect(warmPoolPolicySchema.safeParse({ desiredReady: 1, maxSize: 2, x: 1 }).success).toBe(
      false,
    );
  });
});
