import { describe, expect, it } from "vitest";
import { decideRecovery, problemOf } from "./recovery";
import { DEFAULT_RECOVERY_POLICY, recoveryPolicyOf } from "./recovery-policy";

const now = new Date("2026-12-04T12:00:00Z");
const ago = (min: number) => new Date(now.getTime() - min * 60_000);
const policy = DEFAULT_RECOVERY_POLICY;

const vm = (over: Partial<Parameters<typeof problemOf>[0]> = {}) => ({
  state: "ready" as const,
  healthy: true,
  healthReasons: [] as string[],
  lastHeartbeatAt: ago(0.2),
  stateChangedAt: ago(60),
  holderId: null,
  agentProtocolVersion: 3,
  createdAt: ago(120),
  ...over,
});

const record = (over: Partial<NonNullable<Parameters<typeof decideRecovery>[0]["record"]>>) => ({
  detectedAt: ago(30),
  step: null,
  stepAttempts: 0,
  lastAttemptAt: null,
  noticeAt: null,
  noticeHolderId: null,
  ...over,
});

describe("problemOf: the original LabLink's thresholds", () => {
  it("a VM booting for more than 25 min is stuck; at 24 min it is not", () => {
    expect(problemOf(vm({ state: "booting", stateChangedAt: ago(26) }), policy, now)).toBe(
      "stuck_booting",
    );
    expect(problemOf(vm({ state: "booting", stateChangedAt: ago(24) }), policy, now)).toBeNull();
  });
  it("a VM rebooting for more than 10 min is stuck", () => {
    expect(problemOf(vm({ state: "rebooting", stateChangedAt: ago(11) }), policy, now)).toBe(
      "stuck_rebooting",
    );
    expect(problemOf(vm({ state: "rebooting", stateChangedAt: ago(9) }), policy, now)).toBeNull();
  });
  it("an agent silent for more than 3 min is silent, even if its last word was healthy", () => {
    expect(problemOf(vm({ lastHeartbeatAt: ago(4) }), policy, now)).toBe("silent");
    expect(problemOf(vm({ lastHeartbeatAt: ago(2), healthy: false }), policy, now)).toBe(
      "unhealthy",
    );
  });
  it("a VM the silent sweep marked unhealthy waits for the silent threshold (no warm reboot to a deaf agent)", () => {
    const swept = vm({
      healthy: false,
      healthReasons: ["agent silent since 2026-12-04 11:58:30 UTC"],
      lastHeartbeatAt: ago(1.5),
    });
    expect(problemOf(swept, policy, now)).toBeNull();
    expect(problemOf({ ...swept, lastHeartbeatAt: ago(3) }, policy, now)).toBe("silent");
  });

  it("failed, terminated and provisioning VMs are not recovery's to touch", () => {
    for (const state of ["failed", "terminated", "terminating", "provisioning"] as const)
      expect(problemOf(vm({ state, healthy: false, lastHeartbeatAt: ago(99) }), policy, now)).toBe(
        null,
      );
  });
});

describe("decideRecovery: warm → cold → replace → failed", () => {
  const unhealthy = { problem: "unhealthy" as const, vm: vm({ healthy: false }), policy, now };

  it("waits out the unhealthy grace before the first step", () => {
    expect(decideRecovery({ ...unhealthy, record: null }).kind).toBe("wait");
    expect(decideRecovery({ ...unhealthy, record: record({ detectedAt: ago(1) }) })).toEqual({
      kind: "wait",
      why: "grace",
    });
    expect(decideRecovery({ ...unhealthy, record: record({ detectedAt: ago(2) }) })).toEqual({
      kind: "act",
      step: "warm_reboot",
    });
  });

  it("escalates step by step once each step's attempts are used, then gives up", () => {
    const p = { ...policy, maxWarmReboots: 1, maxColdReboots: 2, maxReplacements: 1 };
    const at = (step: "warm_reboot" | "cold_reboot" | "replace", n: number) =>
      decideRecovery({
        ...unhealthy,
        policy: p,
        record: record({ step, stepAttempts: n, lastAttemptAt: ago(6) }),
      });
    expect(at("warm_reboot", 1)).toEqual({ kind: "act", step: "cold_reboot" });
    expect(at("cold_reboot", 1)).toEqual({ kind: "act", step: "cold_reboot" });
    expect(at("cold_reboot", 2)).toEqual({ kind: "act", step: "replace" });
    expect(at("replace", 1)).toEqual({ kind: "give_up" });
  });

  it("keeps the cooldown between two attempts", () => {
    const r = record({ step: "warm_reboot", stepAttempts: 1, lastAttemptAt: ago(4) });
    expect(decideRecovery({ ...unhealthy, record: r })).toEqual({ kind: "wait", why: "cooldown" });
    const later = record({ step: "warm_reboot", stepAttempts: 1, lastAttemptAt: ago(5) });
    expect(decideRecovery({ ...unhealthy, record: later }).kind).toBe("act");
  });

  it("a silent or stuck VM gets no warm reboot (nobody listens): straight to a cold reboot", () => {
    for (const [problem, v] of [
      ["silent", vm({ lastHeartbeatAt: ago(4) })],
      ["stuck_booting", vm({ state: "booting", stateChangedAt: ago(30) })],
      ["stuck_rebooting", vm({ state: "rebooting", stateChangedAt: ago(11) })],
    ] as const)
      expect(decideRecovery({ problem, vm: v, policy, now, record: record({}) })).toEqual({
        kind: "act",
        step: "cold_reboot",
      });
  });

  it("a VM stuck in its wipe (releasing, silent) cannot be rebooted: it is replaced", () => {
    const wiping = vm({ state: "releasing", lastHeartbeatAt: ago(4) });
    expect(problemOf(wiping, policy, now)).toBe("silent");
    expect(problemOf({ ...wiping, lastHeartbeatAt: ago(1), healthy: false }, policy, now)).toBe(
      null,
    );
    expect(
      decideRecovery({ problem: "silent", vm: wiping, policy, now, record: record({}) }),
    ).toEqual({ kind: "act", step: "replace" });
  });

  it("an agent too old for the reboot command gets a cold reboot", () => {
    const old = vm({ healthy: false, agentProtocolVersion: 2 });
    expect(
      decideRecovery({ problem: "unhealthy", vm: old, policy, now, record: record({}) }),
    ).toEqual({ kind: "act", step: "cold_reboot" });
  });

  it("a step with 0 attempts is skipped; all 0 gives up at once", () => {
    const p = { ...policy, maxWarmReboots: 0, maxColdReboots: 0 };
    expect(decideRecovery({ ...unhealthy, policy: p, record: record({}) })).toEqual({
      kind: "act",
      step: "replace",
    });
    expect(
      decideRecovery({ ...unhealthy, policy: { ...p, maxReplacements: 0 }, record: record({}) }),
    ).toEqual({ kind: "give_up" });
  });

  it("a held VM: the holder is told first, the step comes after the notice period", () => {
    const held = vm({ healthy: false, state: "claimed", holderId: "u1" });
    const base = { problem: "unhealthy" as const, vm: held, policy, now };
    expect(decideRecovery({ ...base, record: record({}) })).toEqual({
      kind: "notify",
      next: "warm_reboot",
    });
    expect(
      decideRecovery({ ...base, record: record({ noticeAt: ago(4), noticeHolderId: "u1" }) }),
    ).toEqual({ kind: "wait", why: "notice" });
    expect(
      decideRecovery({ ...base, record: record({ noticeAt: ago(5), noticeHolderId: "u1" }) }),
    ).toEqual({ kind: "act", step: "warm_reboot" });
    // A notice given to someone else (the VM changed hands) does not count.
    expect(
      decideRecovery({ ...base, record: record({ noticeAt: ago(9), noticeHolderId: "u2" }) }).kind,
    ).toBe("notify");
  });
});

describe("recoveryPolicyOf", () => {
  it("fills defaults and ignores a stored value that no longer validates", () => {
    expect(recoveryPolicyOf({})).toEqual(DEFAULT_RECOVERY_POLICY);
    expect(recoveryPolicyOf({ silentMinutes: 7, cooldownMinutes: -1, junk: 1 })).toEqual({
      ...DEFAULT_RECOVERY_POLICY,
      silentMinutes: 7,
    });
  });
});
