import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../tests/db";
import { heartbeatInput, makeFleet, makeUser, makeVms } from "../../tests/fixtures";
import { auditEvents, type Fleet, type Vm, vms } from "../db/schema";
import type { ReadinessInput } from "../protocol/agent";
import { recordHeartbeat, registerAgent } from "./agents";
import { cleanStartupLines, readinessVerdict } from "./readiness";
import type { Actor } from "./vm-state";

const ok: ReadinessInput = {
  container: "ready",
  startup: { status: "ok", exitCode: 0, onError: "fail", lastLines: ["hi"] },
};
const failedWith = (onError: "fail" | "continue"): ReadinessInput => ({
  container: onError === "fail" ? "failed" : "ready",
  startup: { status: "failed", exitCode: 3, onError, lastLines: ["pip install x", "ERROR: boom"] },
});

describe("readinessVerdict", () => {
  it("container up and script passed (or no script): ready without a warning", () => {
    expect(readinessVerdict(ok)).toEqual({ kind: "ready", warning: null });
    expect(
      readinessVerdict({ container: "ready", startup: { status: "none", onError: "continue" } }),
    ).toEqual({ kind: "ready", warning: null });
    expect(readinessVerdict({ container: "ready" })).toEqual({ kind: "ready", warning: null });
  });

  it("container still starting, or the script still running: wait", () => {
    expect(readinessVerdict({ container: "starting" })).toEqual({ kind: "wait" });
    expect(readinessVerdict({ ...ok, container: "starting" })).toEqual({ kind: "wait" });
  });

  it("a failed script with policy fail: failed, the reason names the exit code and last lines", () => {
    const v = readinessVerdict(failedWith("fail"));
    expect(v).toMatchObject({
      kind: "failed",
      reason: "the fleet's startup script exited with code 3 (on error: fail)",
    });
    expect(v.kind === "failed" && v.issue).toContain("ERROR: boom");
    // Even if the container were still up, policy fail decides.
    expect(readinessVerdict({ ...failedWith("fail"), container: "ready" }).kind).toBe("failed");
  });

  it("a failed script with policy continue: ready, with the last lines as a warning", () => {
    const v = readinessVerdict(failedWith("continue"));
    expect(v.kind).toBe("ready");
    expect(v.kind === "ready" && v.warning).toContain("exited with code 3 (on error: continue)");
    expect(v.kind === "ready" && v.warning).toContain("ERROR: boom");
  });

  it("a container that never came up is failed whatever the policy", () => {
    expect(
      readinessVerdict({ container: "failed", startup: { status: "none", onError: "continue" } }),
    ).toMatchObject({ kind: "failed", reason: "the research container did not come up" });
  });

  it("strips control characters (ANSI colours, carriage returns) from the lines", () => {
    expect(cleanStartupLines(["\u001b[31mred\u001b[0m\r", "a\tb\u0007"])).toEqual([
      "[31mred[0m",
      "a b",
    ]);
  });
});

let t: TestDatabase;
let fleet: Fleet;
const settings = { heartbeatIntervalS: 15, heartbeatFlushMs: 0 };
const agent = (vmId: string): Actor => ({ kind: "agent", id: vmId });
const register = (vmId: string, extra: Record<string, unknown> = {}) =>
  registerAgent(
    t.db,
    {
      vmId,
      bootId: "boot-1",
      hostname: "vm",
      agentVersion: "test",
      protocolVersion: 2,
      gpus: [],
      health: { healthy: true, reasons: [] },
      ...extra,
    },
    settings,
    agent(vmId),
  );
const rowOf = async (vmId: string) =>
  (await t.db.select().from(vms).where(eq(vms.id, vmId)))[0] as Vm;
const auditOf = (vmId: string, action: string) =>
  t.db
    .select()
    .from(auditEvents)
    .where(and(eq(auditEvents.targetId, vmId), eq(auditEvents.action, action)));

beforeAll(async () => {
  t = await createTestDatabase();
  fleet = await makeFleet(t.db, { gpuCount: 0 });
});
afterAll(() => t.drop());

describe("bringing a VM into service by its readiness", () => {
  it("an agent that sends no readiness is ready at registration, as before", async () => {
    const [vm] = (await makeVms(t.db, fleet, 1, "booting")) as [Vm];
    expect((await register(vm.id)).state).toBe("ready");
  });

  it("stays booting while the container starts, then becomes ready on the heartbeat that says so", async () => {
    const [vm] = (await makeVms(t.db, fleet, 1, "booting")) as [Vm];
    expect((await register(vm.id, { readiness: { container: "starting" } })).state).toBe("booting");
    const still = await recordHeartbeat(
      t.db,
      heartbeatInput(vm.id, { readiness: { container: "starting" } }) as never,
      settings,
      agent(vm.id),
    );
    expect(still.state).toBe("booting");
    const reply = await recordHeartbeat(
      t.db,
      heartbeatInput(vm.id, { readiness: ok }) as never,
      settings,
      agent(vm.id),
    );
    expect(reply.state).toBe("ready");
    expect((await rowOf(vm.id)).startupIssue).toBeNull();
  });

  it("policy fail + failed script: failed with the last lines as the reason, and an audit row", async () => {
    const [vm] = (await makeVms(t.db, fleet, 1, "booting")) as [Vm];
    expect((await register(vm.id, { readiness: failedWith("fail") })).state).toBe("failed");
    const row = await rowOf(vm.id);
    expect(row.startupIssue).toContain("exited with code 3 (on error: fail)");
    expect(row.startupIssue).toContain("ERROR: boom");
    const [a] = await auditOf(vm.id, "vm.startup_failed");
    expect(a).toMatchObject({ fromState: "booting", toState: "failed" });
    expect(a?.details).toMatchObject({ lastLines: ["pip install x", "ERROR: boom"], exitCode: 3 });
  });

  it("policy continue + failed script: ready, the warning kept on the VM and in the audit row", async () => {
    const [vm] = (await makeVms(t.db, fleet, 1, "booting")) as [Vm];
    expect((await register(vm.id, { readiness: failedWith("continue") })).state).toBe("ready");
    expect((await rowOf(vm.id)).startupIssue).toContain("ERROR: boom");
    const a = (await auditOf(vm.id, "agent.register")).find((r) => r.toState === "ready");
    expect(String(a?.details.startupWarning)).toContain("ERROR: boom");
  });

  it("a held VM back from a warm reboot goes back to its holder only when ready again", async () => {
    const [vm] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    // Claimed, then rebooting (as the reboot operation leaves it), with a holder.
    const holder = await makeUser(t.db);
    await t.db
      .update(vms)
      .set({ state: "rebooting", holderId: holder.id, assignmentId: crypto.randomUUID() })
      .where(eq(vms.id, vm.id));
    const first = await register(vm.id, { bootId: "boot-2", readiness: { container: "starting" } });
    expect(first.state).toBe("rebooting");
    const back = await register(vm.id, { bootId: "boot-2", readiness: ok });
    expect(back.state).toBe("claimed");
    expect((await rowOf(vm.id)).holderId).toBe(holder.id);
  });

  it("a ready VM whose script fails later with policy fail leaves the pool", async () => {
    const [vm] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
    const reply = await recordHeartbeat(
      t.db,
      heartbeatInput(vm.id, { readiness: failedWith("fail") }) as never,
      settings,
      agent(vm.id),
    );
    expect(reply.state).toBe("failed");
  });
});
