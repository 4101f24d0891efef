import {
  DescribeInstancesCommand,
  EC2Client,
  type Instance,
  RebootInstancesCommand,
  StartInstancesCommand,
  StopInstancesCommand,
  TerminateInstancesCommand,
} from "@aws-sdk/client-ec2";
import { mockClient } from "aws-sdk-client-mock";
import { and, eq, isNull } from "drizzle-orm";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Ec2Fleet } from "../../server/cloud/ec2/ec2";
import { TerraformFleetDriver } from "../../server/cloud/terraform/driver";
import { TerraformRunner } from "../../server/cloud/terraform/runner";
import { agentCredentials, auditEvents, operations, type Vm, vms } from "../../server/db/schema";
import { fleetLedger } from "../../server/domain/convergence";
import { reconcileAll, reconcileFleet } from "../../server/domain/reconcile";
import { reconcileFleets } from "../../server/jobs/definitions";
import { logger } from "../../server/log";
import { workerMetrics } from "../../server/worker-metrics";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeAgent, makeFleet, makeVms } from "../fixtures";

let t: TestDatabase;
const ec2Mock = mockClient(EC2Client);
// The SDK's retries run in its middleware, which the mock replaces: each call is one attempt
// here. Retries and paging against real wire responses: tests/integration/ec2-sdk.test.ts.
const ec2 = new Ec2Fleet({ clientFor: () => new EC2Client({ region: "us-west-2" }) });

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  ec2Mock.restore();
  await t?.drop();
});
beforeEach(() => {
  ec2Mock.reset();
});

const instance = (id: string, state: string, fleet: string, vmId?: string): Instance => ({
  InstanceId: id,
  State: { Name: state as never },
  Tags: [
    { Key: "lablink:fleet", Value: fleet },
    ...(vmId ? [{ Key: "lablink:vm", Value: vmId }] : []),
    { Key: "lablink:name", Value: `name-${id}` },
  ],
});
const describeReturns = (instances: Instance[]) =>
  ec2Mock.on(DescribeInstancesCommand).resolves({ Reservations: [{ Instances: instances }] });

const row = async (id: string) => (await t.db.select().from(vms).where(eq(vms.id, id)))[0] as Vm;

/** A terraform fleet with one VM per situation the reconciler must handle. */
async function scene(name: string) {
  const fleet = await makeFleet(t.db, { name, driver: "terraform", region: "us-west-2" });
  const [ok, ghost, leaving, stopped, untracked, held] = await makeVms(t.db, fleet, 6, "ready");
  if (!ok || !ghost || !leaving || !stopped || !untracked || !held) throw new Error("fixtures");
  const set = (vm: Vm, patch: Partial<Vm>) => t.db.update(vms).set(patch).where(eq(vms.id, vm.id));
  await set(ok, { providerId: "i-ok" });
  await set(ghost, { providerId: "i-ghost" });
  await set(leaving, { providerId: "i-leaving", state: "terminating", healthy: false });
  await set(stopped, { providerId: "i-stopped" });
  await set(untracked, { providerId: null, state: "provisioning", healthy: false });
  await set(held, { providerId: "i-held" });
  const ghostToken = await makeAgent(t.db, ghost);
  describeReturns([
    instance("i-ok", "running", name, ok.id),
    // i-ghost is gone entirely; i-leaving is terminated.
    instance("i-leaving", "terminated", name, leaving.id),
    instance("i-stopped", "stopped", name, stopped.id),
    instance("i-untracked", "running", name, untracked.id),
    instance("i-held", "running", name, held.id),
    instance("i-stray", "running", name),
    instance("i-old", "terminated", name),
  ]);
  return { fleet, ok, ghost, leaving, stopped, untracked, held, ghostToken };
}

describe("reconciliation against EC2 (aws-sdk-client-mock)", () => {
  it("finds orphans, ghosts and mismatches, corrects the rows and audits each", async () => {
    const s = await scene("rec-a");
    const report = await reconcileFleet(t.db, s.fleet, ec2, "report");
    expect(report.errors).toEqual([]);
    expect(report.orphans).toEqual([
      { instanceId: "i-untracked", vmId: s.untracked.id, action: "reported" },
      { instanceId: "i-stray", vmId: null, action: "reported" },
    ]);
    expect(report.ghosts).toEqual([
      { vmId: s.ghost.id, name: s.ghost.name, to: "failed" },
      { vmId: s.leaving.id, name: s.leaving.name, to: "terminated" },
    ]);
    expect(report.mismatches).toEqual([
      { vmId: s.stopped.id, name: s.stopped.name, instanceState: "stopped", action: "failed" },
    ]);
    expect(await row(s.ok.id)).toMatchObject({ state: "ready", healthy: true });
    expect(await row(s.held.id)).toMatchObject({ state: "ready" });
    expect(await row(s.ghost.id)).toMatchObject({
      state: "failed",
      healthy: false,
      healthReasons: ["instance i-ghost is absent"],
    });
    expect(await row(s.leaving.id)).toMatchObject({ state: "terminated" });
    expect(await row(s.stopped.id)).toMatchObject({ state: "failed" });
    expect(await row(s.untracked.id)).toMatchObject({ state: "provisioning", providerId: null });
    // A ghost's token no longer works.
    const creds = await t.db
      .select()
      .from(agentCredentials)
      .where(and(eq(agentCredentials.vmId, s.ghost.id), isNull(agentCredentials.revokedAt)));
    expect(creds).toEqual([]);
    const audit = await t.db.select().from(auditEvents);
    expect(
      audit
        .filter((a) => a.action === "reconcile.ghost")
        .map((a) => a.targetId)
        .sort(),
    ).toEqual([s.ghost.id, s.leaving.id].sort());
    expect(audit.filter((a) => a.action === "reconcile.mismatch").map((a) => a.targetId)).toEqual([
      s.stopped.id,
    ]);
    expect(
      audit
        .filter((a) => a.action === "reconcile.orphan")
        .map((a) => a.targetId)
        .sort(),
    ).toEqual(["i-stray", "i-untracked"]);
    // Describe by tag, nothing else.
    expect(ec2Mock.commandCalls(DescribeInstancesCommand)[0]?.args[0].input.Filters).toEqual([
      { Name: "tag:lablink:fleet", Values: ["rec-a"] },
    ]);
    expect(ec2Mock.commandCalls(TerminateInstancesCommand)).toEqual([]);

    // A second pass changes nothing and does not re-audit the reported orphans.
    const before = (await t.db.select().from(auditEvents)).length;
    const again = await reconcileFleet(t.db, s.fleet, ec2, "report");
    expect(again.ghosts).toEqual([]);
    expect(again.mismatches).toEqual([]);
    expect((await t.db.select().from(auditEvents)).length).toBe(before);
  });

  it("adopts an instance whose row never learned its id, when told to", async () => {
    const s = await scene("rec-b");
    const report = await reconcileFleet(t.db, s.fleet, ec2, "adopt");
    expect(report.orphans).toEqual([
      { instanceId: "i-untracked", vmId: s.untracked.id, action: "adopted" },
      // Nothing to adopt it into: its token is unknown, so it stays reported.
      { instanceId: "i-stray", vmId: null, action: "reported" },
    ]);
    expect(await row(s.untracked.id)).toMatchObject({
      state: "booting",
      providerId: "i-untracked",
    });
  });

  it("terminates orphans when told to; one failure does not stop the others", async () => {
    const s = await scene("rec-c");
    ec2Mock
      .on(TerminateInstancesCommand, { InstanceIds: ["i-untracked"] })
      .rejects(
        Object.assign(new Error("You are not authorized"), { name: "UnauthorizedOperation" }),
      )
      .on(TerminateInstancesCommand, { InstanceIds: ["i-stray"] })
      .resolves({});
    const report = await reconcileFleet(t.db, s.fleet, ec2, "terminate");
    expect(report.orphans).toEqual([{ instanceId: "i-stray", vmId: null, action: "terminated" }]);
    expect(report.errors).toEqual([
      "i-untracked: EC2 TerminateInstances failed after 1 attempt(s): UnauthorizedOperation: You are not authorized",
    ]);
    // Ghosts and mismatches were still handled.
    expect(report.ghosts).toHaveLength(2);
    expect(report.mismatches).toHaveLength(1);
  });

  it("changes nothing when EC2 stays unreachable", async () => {
    const s = await scene("rec-e");
    ec2Mock
      .on(DescribeInstancesCommand)
      .rejects(Object.assign(new Error("Rate exceeded"), { name: "Throttling" }));
    const before = await t.db.select().from(vms).where(eq(vms.fleetId, s.fleet.id));
    const report = await reconcileFleet(t.db, s.fleet, ec2, "terminate");
    expect(report.errors).toEqual([
      "EC2 DescribeInstances failed after 1 attempt(s): Throttling: Rate exceeded",
    ]);
    expect(await t.db.select().from(vms).where(eq(vms.fleetId, s.fleet.id))).toEqual(before);
  });

  it("pages through DescribeInstances", async () => {
    const fleet = await makeFleet(t.db, {
      name: "rec-f",
      driver: "terraform",
      region: "us-west-2",
    });
    ec2Mock
      .on(DescribeInstancesCommand)
      .resolvesOnce({
        Reservations: [{ Instances: [instance("i-1", "running", "rec-f")] }],
        NextToken: "p2",
      })
      .resolvesOnce({ Reservations: [{ Instances: [instance("i-2", "stopped", "rec-f")] }] });
    const found = await ec2.describeFleet("us-west-2", fleet.name);
    expect(found.map((i) => [i.providerId, i.state, i.running])).toEqual([
      ["i-1", "running", true],
      ["i-2", "stopped", false],
    ]);
    expect(ec2Mock.commandCalls(DescribeInstancesCommand)[1]?.args[0].input.NextToken).toBe("p2");
  });

  it("leaves a fleet alone while an operation is changing it", async () => {
    const s = await scene("rec-g");
    await t.db
      .insert(operations)
      .values({ fleetId: s.fleet.id, kind: "fleet.scale", status: "running" });
    const report = await reconcileFleet(t.db, s.fleet, ec2, "terminate");
    expect(report.skipped).toBe("operation in flight");
    expect(ec2Mock.commandCalls(DescribeInstancesCommand)).toEqual([]);
  });

  it("runs on one worker at a time (advisory lock)", async () => {
    ec2Mock
      .on(DescribeInstancesCommand)
      .callsFake(() => new Promise((r) => setTimeout(() => r({ Reservations: [] }), 300)));
    const [a, b] = await Promise.all([
      reconcileAll(t.db, ec2, "report"),
      reconcileAll(t.db, ec2, "report"),
    ]);
    expect([a.skipped, b.skipped].sort()).toEqual([false, true]);
  });
});

describe("EC2 instance actions", () => {
  it("reboots, stops, starts and terminates one instance", async () => {
    ec2Mock.on(RebootInstancesCommand).resolves({});
    ec2Mock.on(StopInstancesCommand).resolves({});
    ec2Mock.on(StartInstancesCommand).resolves({});
    ec2Mock.on(TerminateInstancesCommand).resolves({});
    await ec2.reboot("us-west-2", "i-1");
    await ec2.stop("us-west-2", "i-2");
    await ec2.start("us-west-2", "i-2");
    await ec2.terminate("us-west-2", "i-3");
    expect(ec2Mock.commandCalls(RebootInstancesCommand)[0]?.args[0].input).toEqual({
      InstanceIds: ["i-1"],
    });
    expect(ec2Mock.commandCalls(StopInstancesCommand)[0]?.args[0].input).toEqual({
      InstanceIds: ["i-2"],
    });
    expect(ec2Mock.commandCalls(StartInstancesCommand)[0]?.args[0].input).toEqual({
      InstanceIds: ["i-2"],
    });
    expect(ec2Mock.commandCalls(TerminateInstancesCommand)[0]?.args[0].input).toEqual({
      InstanceIds: ["i-3"],
    });
  });

  it("does not retry a mistake (unknown instance)", async () => {
    ec2Mock.on(RebootInstancesCommand).rejects(
      Object.assign(new Error("The instance ID 'i-9' does not exist"), {
        name: "InvalidInstanceID.NotFound",
      }),
    );
    await expect(ec2.reboot("us-west-2", "i-9")).rejects.toThrow(
      "EC2 RebootInstances failed after 1 attempt(s): InvalidInstanceID.NotFound",
    );
    expect(ec2Mock.commandCalls(RebootInstancesCommand)).toHaveLength(1);
  });
});

describe("addresses after a stop and start", () => {
  const running = (id: string, vmId: string, publicIp: string): Instance => ({
    ...instance(id, "running", "addr", vmId),
    PublicIpAddress: publicIp,
    PrivateIpAddress: "10.0.0.5",
  });

  it("stopAndStart waits for stopped, starts, waits for running and returns the new address", async () => {
    ec2Mock.on(StopInstancesCommand).resolves({});
    ec2Mock.on(StartInstancesCommand).resolves({});
    const states = ["stopping", "stopped", "pending", "running"];
    const describe = ec2Mock.on(DescribeInstancesCommand);
    for (const st of states) {
      describe.resolvesOnce({
        Reservations: [
          {
            Instances: [
              st === "running"
                ? running("i-cold", "00000000-0000-4000-8000-000000000001", "203.0.113.9")
                : instance("i-cold", st, "addr"),
            ],
          },
        ],
      });
    }
    const info = await ec2.stopAndStart("us-west-2", "i-cold", { pollMs: 1 });
    expect(info).toMatchObject({
      state: "running",
      publicIp: "203.0.113.9",
      privateIp: "10.0.0.5",
    });
    expect(ec2Mock.commandCalls(DescribeInstancesCommand)).toHaveLength(4);
    // Started only once it had stopped.
    expect(ec2Mock.commandCalls(StartInstancesCommand)).toHaveLength(1);
  });

  it("a cold reboot through the terraform driver records the instance's new public address", async () => {
    const fleet = await makeFleet(t.db, {
      name: "addr-cold",
      driver: "terraform",
      region: "us-west-2",
    });
    const [vm] = await makeVms(t.db, fleet, 1, "ready", {
      providerId: "i-cold2",
      publicIp: "198.51.100.1",
      privateIp: "10.0.0.5",
    });
    if (!vm) throw new Error("fixtures");
    ec2Mock.on(StopInstancesCommand).resolves({});
    ec2Mock.on(StartInstancesCommand).resolves({});
    ec2Mock
      .on(DescribeInstancesCommand)
      .resolvesOnce({
        Reservations: [{ Instances: [instance("i-cold2", "stopped", "addr-cold")] }],
      })
      .resolves({ Reservations: [{ Instances: [running("i-cold2", vm.id, "203.0.113.10")] }] });
    const driver = new TerraformFleetDriver({
      ledger: fleetLedger(t.db),
      runner: new TerraformRunner({ bin: "/bin/false", cancelGraceMs: 1_000 }),
      moduleDir: "/nonexistent",
      workDir: "/nonexistent",
      backend: { kind: "local" },
      serverUrl: "https://lablink.example.org",
      ec2: new Ec2Fleet({ clientFor: () => new EC2Client({ region: "us-west-2" }) }),
    });
    await driver.rebootVm(fleet, vm, undefined, { hard: true });
    expect(await row(vm.id)).toMatchObject({
      state: "rebooting",
      publicIp: "203.0.113.10",
      privateIp: "10.0.0.5",
    });
  });

  it("reconciliation takes a running instance's new addresses, and leaves matching rows alone", async () => {
    const fleet = await makeFleet(t.db, {
      name: "addr-rec",
      driver: "terraform",
      region: "us-west-2",
    });
    const [moved, same] = await makeVms(t.db, fleet, 2, "ready");
    if (!moved || !same) throw new Error("fixtures");
    await t.db
      .update(vms)
      .set({ providerId: "i-moved", publicIp: "198.51.100.2", privateIp: "10.0.0.5" })
      .where(eq(vms.id, moved.id));
    await t.db
      .update(vms)
      .set({ providerId: "i-same", publicIp: "198.51.100.3", privateIp: "10.0.0.5" })
      .where(eq(vms.id, same.id));
    describeReturns([
      running("i-moved", moved.id, "203.0.113.11"),
      running("i-same", same.id, "198.51.100.3"),
    ]);
    const report = await reconcileFleet(t.db, fleet, ec2, "report");
    expect(report.errors).toEqual([]);
    expect(report.readdressed).toEqual([
      { vmId: moved.id, name: moved.name, publicIp: "203.0.113.11" },
    ]);
    expect(await row(moved.id)).toMatchObject({ state: "ready", publicIp: "203.0.113.11" });
    expect(await row(same.id)).toMatchObject({ state: "ready", publicIp: "198.51.100.3" });
  });
});

describe("reconcile metrics", () => {
  it("the fleet.reconcile job counts its findings by fleet and kind", async () => {
    await scene("rec-metrics");
    const findings = workerMetrics().reconcileFindings;
    // Every fleet of this file's database is reconciled: compare totals across fleets.
    const total = async (finding: string) =>
      (await findings.get()).values
        .filter((v) => v.labels.finding === finding)
        .reduce((n, v) => n + v.value, 0);
    const before = { orphan: await total("orphan"), ghost: await total("ghost") };
    const job = reconcileFleets({ staleSeconds: 60, drivers: {}, ec2, orphanPolicy: "report" });
    const result = (await job.handler({}, { db: t.db, log: logger, jobId: "test" })) as {
      orphans: number;
      ghosts: number;
    };
    expect(result.orphans).toBeGreaterThan(0);
    expect(result.ghosts).toBeGreaterThan(0);
    expect((await total("orphan")) - before.orphan).toBe(result.orphans);
    expect((await total("ghost")) - before.ghost).toBe(result.ghosts);
    const mine = (await findings.get()).values.filter((v) => v.labels.fleet === "rec-metrics");
    expect(mine.some((v) => v.labels.finding === "orphan" && v.value > 0)).toBe(true);
  });
});
