import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FleetDriver } from "../../server/cloud/driver";
import type { Ec2Api } from "../../server/cloud/ec2/ec2";
import { LocalFleetDriver } from "../../server/cloud/local/driver";
import { type Fleet, type Vm, vms } from "../../server/db/schema";
import {
  convergeFleet,
  decideConvergence,
  fleetLedger,
  targetSize,
} from "../../server/domain/convergence";
import { allJobs } from "../../server/jobs/definitions";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser } from "../fixtures";

const row = (name: string, extra: Partial<Vm> = {}): Vm =>
  ({ id: name, name, state: "ready", holderId: null, ...extra }) as Vm;

describe("decideConvergence (pure)", () => {
  const fleet = { name: "gpu", desiredSize: 3 };

  it("aims at targetSize, which is the fleet's desired size today", () => {
    expect(targetSize(fleet, [])).toBe(3);
  });

  it("names new rows <fleet>-<n>, filling gaps first", () => {
    expect(decideConvergence(fleet, [row("gpu-2")])).toEqual({
      create: ["gpu-1", "gpu-3"],
      retire: [],
    });
  });

  it("retires unheld VMs first, newest name first", () => {
    const rows = [
      row("gpu-1"),
      row("gpu-2", { holderId: "u1", state: "claimed" }),
      row("gpu-3"),
      row("gpu-4", { holderId: "u2", state: "claimed" }),
    ];
    const d = decideConvergence({ name: "gpu", desiredSize: 1 }, rows);
    expect(d.create).toEqual([]);
    expect(d.retire.map((v) => v.name)).toEqual(["gpu-3", "gpu-1", "gpu-4"]);
  });

  it("does not count failed or terminating VMs, and does not reuse their names", () => {
    const rows = [row("gpu-1", { state: "failed" }), row("gpu-2", { state: "terminating" })];
    expect(decideConvergence(fleet, rows).create).toEqual(["gpu-3", "gpu-4", "gpu-5"]);
  });

  it("on terminateVm retires only that VM, whatever the size says", () => {
    const rows = [row("gpu-1"), row("gpu-2")];
    expect(decideConvergence(fleet, rows, { removeVmId: "gpu-2" })).toEqual({
      create: [],
      retire: [rows[1]],
    });
  });
});

describe("convergence against the database and the local driver", () => {
  let t: TestDatabase;
  let driver: LocalFleetDriver;
  const rowsOf = (f: Fleet) => t.db.select().from(vms).where(eq(vms.fleetId, f.id));

  beforeAll(async () => {
    t = await createTestDatabase();
    driver = new LocalFleetDriver({
      ledger: fleetLedger(t.db),
      // Nothing listens there: these tests only look at rows and processes, not registration.
      serverUrl: "http://127.0.0.1:9",
      rootDir: path.resolve(import.meta.dirname, "../.."),
      stateDir: mkdtempSync(path.join(os.tmpdir(), "lablink-convergence-")),
      heartbeatIntervalS: 60,
      log: logger,
    });
  });

  afterAll(async () => {
    await driver?.close();
    await t?.drop();
  });

  it("replaces a failed local VM under a new name instead of colliding with it", async () => {
    const fleet = await makeFleet(t.db, { desiredSize: 1 });
    await t.db.insert(vms).values({ fleetId: fleet.id, name: `${fleet.name}-1`, state: "failed" });
    await driver.apply(fleet);
    const rows = await rowsOf(fleet);
    expect(rows.map((v) => [v.name, v.state]).sort()).toEqual([
      [`${fleet.name}-1`, "failed"],
      [`${fleet.name}-2`, "booting"],
    ]);
    expect((await driver.describe(fleet)).map((i) => i.vmName)).toEqual([`${fleet.name}-2`]);
  });

  it("finishes a VM an interrupted run left terminating", async () => {
    const fleet = await makeFleet(t.db, { desiredSize: 0 });
    const [left] = await t.db
      .insert(vms)
      .values({ fleetId: fleet.id, name: `${fleet.name}-1`, state: "terminating" })
      .returning();
    await driver.apply(fleet);
    const [after] = await t.db
      .select()
      .from(vms)
      .where(eq(vms.id, (left as Vm).id));
    expect(after?.state).toBe("terminated");
  });

  it("retires a held VM last when scaling down", async () => {
    const fleet = await makeFleet(t.db, { desiredSize: 2 });
    const user = await makeUser(t.db);
    await t.db.insert(vms).values([
      { fleetId: fleet.id, name: `${fleet.name}-1`, state: "ready" },
      {
        fleetId: fleet.id,
        name: `${fleet.name}-2`,
        state: "claimed",
        holderId: user.id,
        claimedAt: new Date(),
      },
    ]);
    const plan = await convergeFleet(t.db, { ...fleet, desiredSize: 1 });
    expect(plan.leaving.map((v) => v.name)).toEqual([`${fleet.name}-1`]);
    expect(plan.keep.map((v) => v.name)).toEqual([`${fleet.name}-2`]);
    expect(plan.created).toEqual([]);
  });
});

describe("reconciliation reads what exists through the driver's describe()", () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => {
    await t?.drop();
  });

  it("the fleet.reconcile job reports an orphan the terraform driver describes", async () => {
    const fleet = await makeFleet(t.db, { driver: "terraform", region: "us-west-2" });
    const described: string[] = [];
    const terraform = {
      name: "terraform",
      describe: async (f: Fleet) => {
        described.push(f.name);
        return [{ vmName: "stray", providerId: "i-stray", running: true, state: "running" }];
      },
    } as unknown as FleetDriver;
    const ec2 = {
      describeFleet: () => Promise.reject(new Error("reconcile must ask the driver")),
    } as unknown as Ec2Api;
    const job = allJobs({ staleSeconds: 60, drivers: { terraform }, ec2 }).find(
      (j) => j.name === "fleet.reconcile",
    );
    const result = await job?.handler({}, { db: t.db, log: logger, jobId: "test" });
    expect(described).toEqual([fleet.name]);
    expect(result).toMatchObject({ fleets: 1, orphans: 1, errors: [] });
  });
});
