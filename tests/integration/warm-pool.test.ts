import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { and, eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalFleetDriver } from "../../server/cloud/local/driver";
import { type Fleet, fleets, operations, vms } from "../../server/db/schema";
import { claimVm } from "../../server/domain/allocation";
import { fleetLedger } from "../../server/domain/convergence";
import {
  addRecurringSchedule,
  applyRecurringSchedules,
  recurringScheduleInput,
} from "../../server/domain/recurring-schedules";
import { systemActor, transition } from "../../server/domain/vm-state";
import {
  reconcileWarmPools,
  resumeWarmPool,
  setWarmPool,
  warmPoolPolicyOf,
  warmPoolStateOf,
} from "../../server/domain/warm-pool";
import { executeOperation } from "../../server/jobs/operations";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { startApiServer } from "../http";
import { waitFor } from "./helpers/wait";

let t: TestDatabase;
let http: Awaited<ReturnType<typeof startApiServer>>;
let local: LocalFleetDriver;
let admin: Awaited<ReturnType<typeof makeUser>>;
const actor = () => ({ kind: "user" as const, id: admin.id });

beforeAll(async () => {
  t = await createTestDatabase();
  http = await startApiServer(t.db, t.sql, 60);
  admin = await makeUser(t.db, "admin");
  local = new LocalFleetDriver({
    ledger: fleetLedger(t.db),
    serverUrl: http.url,
    rootDir: path.resolve(import.meta.dirname, "../.."),
    stateDir: mkdtempSync(path.join(os.tmpdir(), "lablink-warm-")),
    heartbeatIntervalS: 60,
    log: logger,
  });
});

afterAll(async () => {
  await local?.close();
  await http?.close();
  await t?.drop();
});

const deps = () => ({ db: t.db, drivers: { local }, log: logger });

/** The operations queued for a fleet, run here as the worker would. */
async function runQueued(fleetId: string) {
  const queued = await t.db
    .select({ id: operations.id, kind: operations.kind })
    .from(operations)
    .where(and(eq(operations.fleetId, fleetId), eq(operations.status, "queued")));
  for (const op of queued) await executeOperation(deps(), op.id);
  return queued.map((o) => o.kind);
}

const fleetVms = (fleetId: string) =>
  t.db
    .select()
    .from(vms)
    .where(
      and(
        eq(vms.fleetId, fleetId),
        inArray(vms.state, ["provisioning", "booting", "ready", "claimed", "releasing", "failed"]),
      ),
    );

const readyCount = async (fleetId: string) =>
  (await fleetVms(fleetId)).filter((v) => v.state === "ready" && v.healthy).length;

async function fleetRow(id: string): Promise<Fleet> {
  const [f] = await t.db.select().from(fleets).where(eq(fleets.id, id));
  if (!f) throw new Error("fleet gone");
  return f;
}

describe("a warm pool on the local fleet (real agents)", () => {
  let fleet: Fleet;

  it("grows to 2 ready, and after a claim a third VM boots so 2 stay ready", async () => {
    fleet = await makeFleet(t.db, { driver: "local", name: "warm", desiredSize: 0 });
    await setWarmPool(t.db, {
      fleetId: fleet.id,
      policy: { desiredReady: 2, maxSize: 4 },
      actor: actor(),
    });
    const first = await reconcileWarmPools(t.db);
    expect(first.fleets).toMatchObject([{ fleetId: fleet.id, action: "scale", targetSize: 2 }]);
    expect(await runQueued(fleet.id)).toEqual(["fleet.scale"]);
    await waitFor("2 ready VMs", async () => (await readyCount(fleet.id)) === 2, 30_000);

    const researcher = await makeUser(t.db);
    await claimVm(t.db, {
      userId: researcher.id,
      fleetId: fleet.id,
      actor: { kind: "user", id: researcher.id },
    });
    expect(await readyCount(fleet.id)).toBe(1);

    const second = await reconcileWarmPools(t.db);
    expect(second.fleets).toMatchObject([{ action: "scale", targetSize: 3 }]);
    await runQueued(fleet.id);
    await waitFor(
      "2 ready again beside the claimed one",
      async () => {
        const rows = await fleetVms(fleet.id);
        return (
          rows.length === 3 &&
          rows.filter((v) => v.state === "ready" && v.healthy).length === 2 &&
          rows.filter((v) => v.state === "claimed").length === 1
        );
      },
      30_000,
    );
    // At its size: nothing more to do.
    expect((await reconcileWarmPools(t.db)).fleets).toMatchObject([
      { action: "none", status: "ok", reason: null },
    ]);
  }, 60_000);

  it("replaces a failed VM with a fresh one", async () => {
    const [victim] = (await fleetVms(fleet.id)).filter((v) => v.state === "ready");
    if (!victim) throw new Error("no ready VM");
    await transition(t.db, {
      vmId: victim.id,
      from: "ready",
      to: "failed",
      actor: systemActor,
      action: "test.fail",
    });
    const run = await reconcileWarmPools(t.db);
    expect(run.fleets).toMatchObject([{ action: "replace" }]);
    expect(await runQueued(fleet.id)).toEqual(["vm.replace"]);
    await waitFor(
      "the failed VM replaced, 2 ready again",
      async () => {
        const rows = await fleetVms(fleet.id);
        return (
          !rows.some((v) => v.id === victim.id) &&
          rows.filter((v) => v.state === "ready" && v.healthy).length === 2
        );
      },
      30_000,
    );
    // The VM had been ready: its failure is no failed launch.
    expect(warmPoolStateOf((await fleetRow(fleet.id)).warmPoolState).consecutiveFailures).toBe(0);
  }, 60_000);

  it("two reconcilers at once: one runs, the other finds the lock taken; one scale", async () => {
    await setWarmPool(t.db, {
      fleetId: fleet.id,
      policy: { desiredReady: 3, maxSize: 4 },
      actor: actor(),
    });
    const [a, b] = await Promise.all([reconcileWarmPools(t.db), reconcileWarmPools(t.db)]);
    expect([a.locked, b.locked].sort()).toEqual([false, true]);
    const scales = await t.db
      .select()
      .from(operations)
      .where(
        and(
          eq(operations.fleetId, fleet.id),
          eq(operations.kind, "fleet.scale"),
          eq(operations.status, "queued"),
        ),
      );
    expect(scales).toHaveLength(1);
    expect(scales[0]?.params).toMatchObject({ size: 4 });
    await runQueued(fleet.id);
    await waitFor("3 ready", async () => (await readyCount(fleet.id)) === 3, 30_000);
    await local.destroy(await fleetRow(fleet.id));
  }, 60_000);
});

describe("launch failures", () => {
  it("back off exponentially, then pause the pool with the reason; resume starts again", async () => {
    // No worker here runs terraform: every scale operation fails, like a broken launch.
    const fleet = await makeFleet(t.db, { driver: "terraform", name: "broken", desiredSize: 0 });
    await setWarmPool(t.db, {
      fleetId: fleet.id,
      policy: { desiredReady: 2, maxSize: 4, backoffBaseS: 60, maxConsecutiveFailures: 3 },
      actor: actor(),
    });
    const t0 = new Date("2030-01-01T00:00:00Z");
    const at = (s: number) => new Date(t0.getTime() + s * 1000);
    const failOnce = async (s: number) => {
      const r = await reconcileWarmPools(t.db, { now: at(s) });
      expect(r.fleets[0]?.action).toBe("scale");
      await runQueued(fleet.id);
    };
    await failOnce(0);
    // The failure is seen on the next run: back off 60 s.
    let r = await reconcileWarmPools(t.db, { now: at(1) });
    expect(r.fleets[0]).toMatchObject({ status: "backoff", action: "none" });
    expect(r.fleets[0]?.reason).toMatch(
      /Backing off until 2030-01-01T00:01:01.000Z after 1 failed/,
    );
    await failOnce(62);
    r = await reconcileWarmPools(t.db, { now: at(63) });
    // Second failure: 120 s from when it was seen.
    expect(r.fleets[0]?.reason).toMatch(/until 2030-01-01T00:03:03.000Z after 2 failed/);
    expect((await reconcileWarmPools(t.db, { now: at(180) })).fleets[0]?.action).toBe("none");
    await failOnce(184);
    r = await reconcileWarmPools(t.db, { now: at(185) });
    expect(r.fleets[0]).toMatchObject({ action: "pause", status: "paused" });
    const paused = await fleetRow(fleet.id);
    expect(warmPoolPolicyOf(paused.warmPool)).toMatchObject({
      paused: true,
      pausedReason: expect.stringMatching(/3 failed launches/),
    });
    // Paused: nothing is launched however long we wait.
    expect((await reconcileWarmPools(t.db, { now: at(100_000) })).fleets[0]).toMatchObject({
      status: "paused",
      action: "none",
    });
    await resumeWarmPool(t.db, { fleetId: fleet.id, actor: actor() });
    expect((await reconcileWarmPools(t.db, { now: at(100_001) })).fleets[0]?.action).toBe("scale");
  });

  it("counts VMs failing before ready as failed launches, but not those failed before the pool", async () => {
    const fleet = await makeFleet(t.db, { driver: "terraform", name: "flaky", desiredSize: 2 });
    const [old] = await makeVms(t.db, fleet, 1, "failed");
    await makeVms(t.db, fleet, 1, "ready");
    await setWarmPool(t.db, {
      fleetId: fleet.id,
      policy: { desiredReady: 1, maxSize: 4 },
      actor: actor(),
    });
    const mine = (r: Awaited<ReturnType<typeof reconcileWarmPools>>) =>
      r.fleets.find((f) => f.fleetId === fleet.id);
    const failures = async () =>
      warmPoolStateOf((await fleetRow(fleet.id)).warmPoolState).consecutiveFailures;
    // Failed before the pool existed: replaced, not counted.
    expect(mine(await reconcileWarmPools(t.db))).toMatchObject({ action: "replace" });
    expect(await failures()).toBe(0);
    await t.db
      .update(operations)
      .set({ status: "cancelled" })
      .where(eq(operations.fleetId, fleet.id));
    await t.db
      .update(vms)
      .set({ state: "terminated" })
      .where(eq(vms.id, old?.id ?? ""));
    // A new VM that fails while booting is a failed launch.
    const [fresh] = await makeVms(t.db, fleet, 1, "booting");
    await transition(t.db, {
      vmId: fresh?.id ?? "",
      from: "booting",
      to: "failed",
      actor: systemActor,
      action: "test.fail",
    });
    const r = await reconcileWarmPools(t.db);
    expect(mine(r)).toMatchObject({ status: "backoff", action: "none" });
    expect(await failures()).toBe(1);
    // Seen again: still one.
    await reconcileWarmPools(t.db);
    expect(await failures()).toBe(1);
  });

  it("a fleet without a warm pool is left alone", async () => {
    const plain = await makeFleet(t.db, { driver: "local", name: "plain", desiredSize: 0 });
    const r = await reconcileWarmPools(t.db);
    expect(r.fleets.map((f) => f.fleetId)).not.toContain(plain.id);
  });
});

describe("a recurring slot drives a warm pool of real agents", () => {
  it("at the slot's start 2 VMs boot and become ready; at its end the pool shrinks to 0", async () => {
    const fleet = await makeFleet(t.db, { driver: "local", name: "slot", desiredSize: 0 });
    await setWarmPool(t.db, {
      fleetId: fleet.id,
      policy: { desiredReady: 0, maxSize: 3 },
      actor: actor(),
    });
    const monday = new Date("2026-03-30T12:00:00Z");
    await addRecurringSchedule(
      t.db,
      {
        ...recurringScheduleInput.parse({
          fleetId: fleet.id,
          rrule: "FREQ=WEEKLY;BYDAY=TU",
          timezone: "Europe/London",
          startTime: "09:00",
          endTime: "17:00",
          startDate: "2026-03-01",
          size: 2,
        }),
        actor: actor(),
      },
      monday,
    );
    const mine = async (iso: string) =>
      (await applyRecurringSchedules(t.db, { now: new Date(iso) })).filter(
        (r) => r.fleetId === fleet.id,
      );
    expect(await mine("2026-03-31T08:00:05Z")).toMatchObject([{ outcome: "applied", size: 2 }]);
    expect(
      (await reconcileWarmPools(t.db)).fleets.find((f) => f.fleetId === fleet.id),
    ).toMatchObject({ action: "scale", targetSize: 2 });
    await runQueued(fleet.id);
    await waitFor("2 ready in the slot", async () => (await readyCount(fleet.id)) === 2, 30_000);

    expect(await mine("2026-03-31T16:00:05Z")).toMatchObject([{ outcome: "applied", size: 0 }]);
    expect(
      (await reconcileWarmPools(t.db)).fleets.find((f) => f.fleetId === fleet.id),
    ).toMatchObject({ action: "scale", targetSize: 0 });
    await runQueued(fleet.id);
    await waitFor(
      "no VMs after the slot",
      async () => (await fleetVms(fleet.id)).length === 0,
      30_000,
    );
  }, 60_000);
});
