import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalFleetDriver } from "../../server/cloud/local/driver";
import { auditEvents, type Fleet, fleets, type Vm, vms } from "../../server/db/schema";
import { fleetLedger } from "../../server/domain/convergence";
import { logger } from "../../server/log";
import { apiClient } from "../api/harness";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeUser } from "../fixtures";
import { startApiServer } from "../http";

// Far longer than the waits below: readiness must reach the server as soon as it changes, not
// with the next heartbeat.
const HEARTBEAT_S = 60;

let t: TestDatabase;
let server: Awaited<ReturnType<typeof startApiServer>>;
let api: ReturnType<typeof apiClient>;
let driver: LocalFleetDriver;
let adminId: string;
let researcherId: string;
const stateDir = mkdtempSync(path.join(os.tmpdir(), "lablink-readiness-"));
const fleetOf: Record<string, Fleet> = {};

async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const vmOf = async (fleet: string) =>
  (
    await t.db
      .select()
      .from(vms)
      .where(eq(vms.fleetId, fleetOf[fleet]?.id ?? ""))
  )[0] as Vm;

/** Creates a local fleet of one VM through the admin API and starts its agent. */
async function createFleet(
  name: string,
  config: { startupScript?: string; startupOnError?: "fail" | "continue" },
) {
  const res = await api.mutate(
    "fleet.create",
    { driver: "local", name, instanceType: "local.sim", gpuCount: 1, size: 1, config },
    { userId: adminId },
  );
  expect(res.status, JSON.stringify(res.error)).toBe(200);
  const { fleetId } = res.data as { fleetId: string };
  // The worker would run the queued operation; the test drives the driver itself.
  const [fleet] = await t.db
    .update(fleets)
    .set({ status: "active", desiredSize: 1 })
    .where(eq(fleets.id, fleetId))
    .returning();
  fleetOf[name] = fleet as Fleet;
  await driver.apply(fleet as Fleet);
}

beforeAll(async () => {
  t = await createTestDatabase();
  server = await startApiServer(t.db, t.sql, HEARTBEAT_S);
  api = apiClient(t.db);
  adminId = (await makeUser(t.db, "admin")).id;
  researcherId = (await makeUser(t.db, "researcher")).id;
  driver = new LocalFleetDriver({
    ledger: fleetLedger(t.db),
    serverUrl: server.url,
    rootDir: path.resolve(import.meta.dirname, "../.."),
    stateDir,
    heartbeatIntervalS: HEARTBEAT_S,
    log: logger,
  });
  await createFleet("ok", { startupScript: "echo hi\n", startupOnError: "fail" });
  await createFleet("broken", {
    startupScript:
      "echo 'installing tools'\necho 'E: Unable to locate package sleap' >&2\nexit 3\n",
    startupOnError: "fail",
  });
  await createFleet("lenient", {
    startupScript: "echo 'optional-plugin missing'\nexit 3\n",
    startupOnError: "continue",
  });
  await createFleet("slow", { startupScript: "sleep 600\n", startupOnError: "fail" });
}, 60_000);

afterAll(async () => {
  await driver?.close();
  await server?.close();
  await t?.drop();
});

describe("a local VM is claimable only when truly ready", () => {
  it("a startup script that succeeds: ready, with no startup issue", async () => {
    const vm = await waitFor(
      "the ok VM ready",
      async () => {
        const v = await vmOf("ok");
        return v.state === "ready" && v;
      },
      40_000,
    );
    expect(vm.startupIssue).toBeNull();
  });

  it("a failing script with policy fail: failed with its last lines as the reason, never claimable", async () => {
    const vm = await waitFor(
      "the broken VM failed",
      async () => {
        const v = await vmOf("broken");
        return v.state === "failed" && v;
      },
      40_000,
    );
    expect(vm.startupIssue).toContain("exited with code 3 (on error: fail)");
    expect(vm.startupIssue).toContain("E: Unable to locate package sleap");

    const detail = await api.query("vm.get", { vmId: vm.id }, { userId: adminId });
    expect(detail.data).toMatchObject({ state: "failed", startupIssue: vm.startupIssue });
    const history = (detail.data as { history: { action: string; details: unknown }[] }).history;
    expect(history.find((h) => h.action === "vm.startup_failed")?.details).toMatchObject({
      exitCode: 3,
      lastLines: ["installing tools", "E: Unable to locate package sleap"],
    });

    const claim = await api.mutate(
      "vm.claim",
      { fleetId: fleetOf.broken?.id },
      { userId: researcherId },
    );
    expect(claim.status).not.toBe(200);
    expect((await vmOf("broken")).holderId).toBeNull();
  });

  it("a failing script with policy continue: ready, the warning shown to admins and not to researchers", async () => {
    const vm = await waitFor(
      "the lenient VM ready",
      async () => {
        const v = await vmOf("lenient");
        return v.state === "ready" && v;
      },
      40_000,
    );
    expect(vm.startupIssue).toContain("exited with code 3 (on error: continue)");
    expect(vm.startupIssue).toContain("optional-plugin missing");

    const list = await api.query(
      "vm.list",
      { fleetId: fleetOf.lenient?.id, limit: 10, offset: 0 },
      { userId: adminId },
    );
    expect((list.data as { rows: { startupIssue: string | null }[] }).rows[0]?.startupIssue).toBe(
      vm.startupIssue,
    );
    const fleetList = await api.query("fleet.list", undefined, { userId: adminId });
    const card = (fleetList.data as { id: string; startupIssues: number }[]).find(
      (f) => f.id === fleetOf.lenient?.id,
    );
    expect(card?.startupIssues).toBe(1);

    const claim = await api.mutate(
      "vm.claim",
      { fleetId: fleetOf.lenient?.id },
      { userId: researcherId },
    );
    expect(claim.status, JSON.stringify(claim.error)).toBe(200);
    const researcherAnswers = [
      claim,
      await api.query("vm.mine", undefined, { userId: researcherId }),
      await api.query("pool.summary", undefined, { userId: researcherId }),
    ];
    for (const answer of researcherAnswers) {
      expect(answer.status).toBe(200);
      const text = JSON.stringify(answer.data);
      expect(text).not.toContain("optional-plugin");
      expect(text).not.toMatch(/startupIssue|startup script/i);
    }
    // Admin-only procedures stay closed to the researcher.
    const peek = await api.query("vm.get", { vmId: vm.id }, { userId: researcherId });
    expect(peek.status).toBe(403);
  });

  it("a container that is not ready yet (script still running): booting, counted as booting, not claimable", async () => {
    // By now the other three VMs have long finished their simulated boot.
    const vm = await vmOf("slow");
    expect(vm.state).toBe("booting");
    expect(vm.agentVersion).toBeTruthy();
    const claim = await api.mutate("vm.claim", { fleetId: fleetOf.slow?.id }, { userId: adminId });
    expect(claim.status).not.toBe(200);
    const summary = await api.query("pool.summary", undefined, { userId: adminId });
    expect(JSON.stringify(summary.data)).toContain('"booting":1');
    expect((await vmOf("slow")).state).toBe("booting");
  });

  it("a held VM back from a warm reboot goes back to its holder only once its container is ready again", async () => {
    const holder = await makeUser(t.db, "researcher", "reboot-holder");
    await waitFor("the ok VM ready", async () => (await vmOf("ok")).state === "ready", 40_000);
    const claim = await api.mutate("vm.claim", { fleetId: fleetOf.ok?.id }, { userId: holder.id });
    expect(claim.status, JSON.stringify(claim.error)).toBe(200);
    const before = await vmOf("ok");
    const rebootedAt = Date.now();
    await driver.rebootVm(fleetOf.ok as Fleet, before);
    // Local agents share this machine's boot id: the new boot shows in its timings instead.
    const back = await waitFor(
      "the VM back with its holder after the simulated boot",
      async () => {
        const v = await vmOf("ok");
        const readyAt = Date.parse(v.bootTimings?.containerReadyAt ?? "");
        return v.state === "claimed" && readyAt > rebootedAt && v;
      },
      40_000,
    );
    expect(back.holderId).toBe(holder.id);
    const [returned] = await t.db
      .select()
      .from(auditEvents)
      .where(
        and(
          eq(auditEvents.targetId, back.id),
          eq(auditEvents.fromState, "rebooting"),
          eq(auditEvents.toState, "claimed"),
        ),
      );
    // Not at registration (a second or two into the boot) but once the simulated container was up.
    const readyAt = Date.parse(back.bootTimings?.containerReadyAt ?? "");
    expect(readyAt).not.toBeNaN();
    expect(returned?.at.getTime()).toBeGreaterThanOrEqual(readyAt - 50);
    const registeredAt = Date.parse(back.bootTimings?.registeredAt ?? "");
    expect(readyAt).toBeGreaterThan(registeredAt);
  });
});
