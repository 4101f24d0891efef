import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, operations, vms } from "../../server/db/schema";
import { recordHeartbeat } from "../../server/domain/agents";
import { markSilentAgents } from "../../server/domain/health";
import { allJobs } from "../../server/jobs/definitions";
import { JobRunner } from "../../server/jobs/runner";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeVms } from "../fixtures";
import { runJob, waitForJob } from "../jobs";

let t: TestDatabase;
let runner: JobRunner;

beforeAll(async () => {
  t = await createTestDatabase();
  runner = new JobRunner(t.url, t.db, logger);
  await runner.start(allJobs({ staleSeconds: 60, drivers: {} }));
});
afterAll(async () => {
  await runner?.stop();
  await t?.drop();
});

describe("silent agents", () => {
  it("marks VMs whose agent went silent as unhealthy, with an audit row, and a heartbeat restores them", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const [silent, alive] = await makeVms(t.db, fleet, 2, "ready");
    if (!silent || !alive) throw new Error("fixtures");
    await t.db
      .update(vms)
      .set({ lastHeartbeatAt: sql`now() - interval '5 minutes'` })
      .where(eq(vms.id, silent.id));
    await t.db.update(vms).set({ lastHeartbeatAt: sql`now()` }).where(eq(vms.id, alive.id));

    const marked = await markSilentAgents(t.db, 60);
    expect(marked).toEqual([silent.id]);
    const [s] = await t.db.select().from(vms).where(eq(vms.id, silent.id));
    expect(s?.healthy).toBe(false);
    expect(s?.healthReasons[0]).toMatch(/^agent silent since /);
    const audit = await t.db.select().from(auditEvents).where(eq(auditEvents.targetId, silent.id));
    expect(audit.map((a) => a.action)).toEqual(["vm.agent_silent"]);
    // Marking again changes nothing.
    expect(await markSilentAgents(t.db, 60)).toEqual([]);

    await recordHeartbeat(
      t.db,
      {
        vmId: silent.id,
        bootId: "boot-1",
        gpus: [],
        health: { healthy: true, reasons: [] },
        inUse: false,
        idleSince: null,
      },
      { heartbeatIntervalS: 15 },
      { kind: "agent", id: silent.id },
    );
    const [back] = await t.db.select().from(vms).where(eq(vms.id, silent.id));
    expect(back).toMatchObject({ healthy: true, healthReasons: [] });
  });

  it("runs the sweep as a pg-boss job", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const [vm] = await makeVms(t.db, fleet, 1, "ready");
    if (!vm) throw new Error("fixtures");
    await t.db
      .update(vms)
      .set({ lastHeartbeatAt: sql`now() - interval '10 minutes'` })
      .where(eq(vms.id, vm.id));
    const job = await runJob(runner, "vm.sweep-silent");
    expect(job.state).toBe("completed");
    const [after] = await t.db.select().from(vms).where(eq(vms.id, vm.id));
    expect(after?.healthy).toBe(false);
  });
});

describe("automatic recovery", () => {
  it("runs as a pg-boss job: a VM silent past its fleet's limit gets a cold reboot operation", async () => {
    const fleet = await makeFleet(t.db, { gpuCount: 0 });
    const [vm] = await makeVms(t.db, fleet, 1, "ready");
    if (!vm) throw new Error("fixtures");
    await t.db
      .update(vms)
      .set({ lastHeartbeatAt: sql`now() - interval '4 minutes'` })
      .where(eq(vms.id, vm.id));
    const job = await runJob(runner, "vm.recover");
    expect(job.state).toBe("completed");
    const ops = await t.db.select().from(operations).where(eq(operations.vmId, vm.id));
    expect(ops).toMatchObject([{ kind: "vm.reboot", status: "queued", params: { cold: true } }]);
  });
});

describe("job runner", () => {
  it("refuses to enqueue an invalid payload", async () => {
    await expect(runner.send("operation.run", { operationId: "not-a-uuid" })).rejects.toThrow();
  });

  it("fails an invalid payload that got into the queue anyway, without retrying", async () => {
    // operation.run retries twice on errors; a bad payload must not be retried.
    const id = await runner.boss.send("operation.run", { operationId: 42 });
    if (!id) throw new Error("not enqueued");
    const job = await waitForJob(runner, "operation.run", id);
    expect(job.state).toBe("failed");
    expect(job.retryCount).toBe(0);
    expect(JSON.stringify(job.output)).toMatch(/invalid payload/);
  });
});
