import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  DescribeInstancesCommand,
  EC2Client,
  RebootInstancesCommand,
  StartInstancesCommand,
  StopInstancesCommand,
} from "@aws-sdk/client-ec2";
import { mockClient } from "aws-sdk-client-mock";
import { and, eq, isNull, ne } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Ec2Fleet } from "../../server/cloud/ec2/ec2";
import { backendHcl, TerraformFleetDriver } from "../../server/cloud/terraform/driver";
import { TerraformRunner } from "../../server/cloud/terraform/runner";
import { agentCredentials, type Fleet, fleets, operations, vms } from "../../server/db/schema";
import { fleetLedger } from "../../server/domain/convergence";
import { readLogs, requestCancel, requestOperation } from "../../server/domain/operations";
import { executeOperation } from "../../server/jobs/operations";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser } from "../fixtures";
import { waitFor } from "./helpers/wait";

const STAND_IN = path.resolve(import.meta.dirname, "../terraform-stand-in/terraform");
const moduleDir = path.resolve(import.meta.dirname, "../../terraform");

let t: TestDatabase;
const workDir = mkdtempSync(path.join(os.tmpdir(), "lablink-tf-"));
const callsFile = path.join(workDir, "calls.jsonl");
const ec2Mock = mockClient(EC2Client);
const ec2 = new Ec2Fleet({ clientFor: () => new EC2Client({ region: "us-west-2" }) });

function driver(
  scenario: string,
  cancelGraceMs = 5_000,
  /** null: a worker without LABLINK_AGENT_IMAGE. */
  agentImage: string | null = "ghcr.io/lablink/agent:test",
) {
  return new TerraformFleetDriver({
    ledger: fleetLedger(t.db),
    runner: new TerraformRunner({
      bin: STAND_IN,
      cancelGraceMs,
      env: { STANDIN_SCENARIO: scenario, STANDIN_CALLS: callsFile },
    }),
    moduleDir,
    workDir,
    backend: { kind: "local" },
    serverUrl: "https://lablink.example.edu",
    agentImage: agentImage ?? undefined,
    ec2,
  });
}

type Call = { args: string[]; vars?: string[]; withToken?: string[]; tokensWellFormed?: boolean };
const calls = (): Call[] =>
  existsSync(callsFile)
    ? readFileSync(callsFile, "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Call)
    : [];
const lastPlan = () =>
  calls()
    .filter((c) => c.args[0] === "plan")
    .at(-1);

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  ec2Mock.restore();
  await t?.drop();
});

async function runOp(
  fleet: Fleet,
  kind: "fleet.create" | "fleet.scale" | "fleet.destroy" | "vm.reboot" | "vm.terminate",
  scenario: string,
  params: Record<string, unknown> = {},
  vmId?: string,
) {
  const op = await requestOperation(t.db, {
    fleetId: fleet.id,
    kind,
    params,
    vmId,
    actor: { kind: "system", id: null },
  });
  const result = await executeOperation(
    { db: t.db, drivers: { terraform: driver(scenario) }, log: logger },
    op.id,
  );
  const [row] = await t.db.select().from(operations).where(eq(operations.id, op.id));
  const log = (await readLogs(t.db, op.id, { after: 0, limit: 1000 })).lines.map((l) => l.line);
  return { op: row, result, log };
}

const live = (fleetId: string) =>
  t.db
    .select()
    .from(vms)
    .where(and(eq(vms.fleetId, fleetId), ne(vms.state, "terminated")))
    .orderBy(vms.name);

const tfFleet = (name: string) =>
  makeFleet(t.db, {
    name,
    driver: "terraform",
    region: "us-west-2",
    image: "ghcr.io/example/research:1",
    desiredSize: 0,
    status: "creating",
    config: {
      allowedSshCidrs: ["198.51.100.0/24"],
      startupScript: "echo hi",
      tags: { lab: "talmo" },
    },
  });

describe("terraform driver with the stand-in binary", () => {
  it("creates, scales down and destroys a fleet; rows, tokens, log and progress follow", async () => {
    const fleet = await tfFleet("tf-a");
    const created = await runOp(fleet, "fleet.create", "success", { size: 3 });
    expect(created.result).toEqual({ status: "succeeded" });
    expect(created.op?.progress).toEqual({ done: 4, total: 4 }); // security group + 3 instances
    const rows = await live(fleet.id);
    expect(rows.map((v) => [v.name, v.state])).toEqual([
      ["tf-a-1", "booting"],
      ["tf-a-2", "booting"],
      ["tf-a-3", "booting"],
    ]);
    for (const v of rows) {
      expect(v.providerId).toMatch(/^i-0[0-9a-f]{16}$/);
      expect(v.privateIp).toMatch(/^10\.0\.0\./);
      expect(v.publicIp).toMatch(/^203\.0\.113\./);
    }
    const plan = lastPlan();
    expect(plan?.withToken).toEqual(["tf-a-1", "tf-a-2", "tf-a-3"]);
    expect(plan?.tokensWellFormed).toBe(true);
    const [fleetRow] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(fleetRow?.status).toBe("active");
    const text = created.log.join("\n");
    expect(text).toContain("Plan: 4 to add, 0 to change, 0 to destroy.");
    expect(text).toContain('aws_instance.vm["tf-a-2"]: Creation complete after 13s');
    expect(text).toContain("Apply complete! Resources: 4 added, 0 changed, 0 destroyed.");
    expect(text).not.toMatch(/lla_[0-9a-f]{32}_/);
    // The variables file (the only place tokens are written) is gone after the run.
    expect(existsSync(path.join(workDir, fleet.id, "lablink.tfvars.json"))).toBe(false);
    expect(readFileSync(path.join(workDir, fleet.id, "backend.tf"), "utf8")).toContain(
      'backend "local"',
    );

    const scaled = await runOp(fleet, "fleet.scale", "success", { size: 1 });
    expect(scaled.result).toEqual({ status: "succeeded" });
    expect((await live(fleet.id)).map((v) => v.name)).toEqual(["tf-a-1"]);
    // Existing instances get no new token: their user data is never touched again.
    expect(lastPlan()?.withToken).toEqual([]);
    expect(scaled.log.join("\n")).toContain("Plan: 0 to add, 0 to change, 2 to destroy.");
    const removed = await t.db
      .select()
      .from(vms)
      .where(and(eq(vms.fleetId, fleet.id), eq(vms.state, "terminated")));
    expect(removed.map((v) => v.name).sort()).toEqual(["tf-a-2", "tf-a-3"]);
    const activeCreds = await t.db
      .select()
      .from(agentCredentials)
      .where(
        and(
          eq(agentCredentials.vmId, removed[0]?.id as string),
          isNull(agentCredentials.revokedAt),
        ),
      );
    expect(activeCreds).toEqual([]);

    const destroyed = await runOp(fleet, "fleet.destroy", "success");
    expect(destroyed.result).toEqual({ status: "succeeded" });
    expect(await live(fleet.id)).toEqual([]);
    expect(destroyed.log.join("\n")).toContain("Destroy complete! Resources: 1 destroyed.");
  });

  it("records a resource error as a failed operation, and the next run adopts what was created", async () => {
    const fleet = await tfFleet("tf-b");
    const failed = await runOp(fleet, "fleet.create", "error", { size: 3 });
    expect(failed.result).toEqual({ status: "failed" });
    expect(failed.op?.error, JSON.stringify(failed.log)).toMatch(
      /terraform apply failed: creating EC2 Instance: InsufficientInstanceCapacity/,
    );
    expect(failed.log.join("\n")).toContain('aws_instance.vm["tf-b-2"]: Creation errored after 2s');
    const [f] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(f?.status).toBe("failed");
    // Nothing points at nothing: rows without an instance stay provisioning, no provider id.
    expect((await live(fleet.id)).map((v) => [v.name, v.state, !!v.providerId])).toEqual([
      ["tf-b-1", "provisioning", false],
      ["tf-b-2", "provisioning", false],
      ["tf-b-3", "provisioning", false],
    ]);

    const retried = await runOp(fleet, "fleet.scale", "success", { size: 3 });
    expect(retried.result).toEqual({ status: "succeeded" });
    // tf-b-1's instance was created by the failed run: adopted, and it keeps its first token.
    expect(lastPlan()?.withToken).toEqual(["tf-b-2", "tf-b-3"]);
    expect(retried.log.join("\n")).toContain("Plan: 2 to add, 0 to change, 0 to destroy.");
    expect((await live(fleet.id)).every((v) => v.state === "booting" && v.providerId)).toBe(true);
  });

  it("cancel interrupts terraform with SIGINT; state stays consistent", async () => {
    const fleet = await tfFleet("tf-c");
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.create",
      params: { size: 2 },
      actor: { kind: "system", id: null },
    });
    const running = executeOperation(
      {
        db: t.db,
        drivers: { terraform: driver("interrupt") },
        log: logger,
        settings: { leaseSeconds: 10, renewMs: 100 },
      },
      op.id,
    );
    await waitFor(
      "the first instance",
      async () => {
        const [row] = await t.db.select().from(operations).where(eq(operations.id, op.id));
        return (row?.progress?.done ?? 0) >= 2;
      },
      45_000,
    );
    const admin = await makeUser(t.db, "admin");
    await requestCancel(t.db, op.id, { kind: "user", id: admin.id });
    expect(await running).toEqual({ status: "cancelled" });
    const log = (await readLogs(t.db, op.id, { after: 0, limit: 1000 })).lines.map((l) => l.line);
    expect(log).toContain("interrupting terraform (SIGINT; SIGTERM in 5 s)");
    expect(log).toContain(
      "Interrupt received. Please wait for Terraform to exit or data loss may occur.",
    );
    expect(log).not.toContain("terraform still running; sending SIGTERM");
    expect(log.at(-1)).toBe("fleet.create cancelled");
    // Nothing is adopted mid-run; the next run adopts the one instance created before the cancel.
    const again = await runOp(fleet, "fleet.scale", "success", { size: 2 });
    expect(again.result).toEqual({ status: "succeeded" });
    expect(lastPlan()?.withToken).toEqual(["tf-c-2"]);
  });

  it("escalates to SIGTERM when terraform ignores SIGINT past the grace period", async () => {
    const fleet = await tfFleet("tf-d");
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.create",
      params: { size: 2 },
      actor: { kind: "system", id: null },
    });
    const running = executeOperation(
      {
        db: t.db,
        drivers: { terraform: driver("stubborn", 300) },
        log: logger,
        settings: { leaseSeconds: 10, renewMs: 100 },
      },
      op.id,
    );
    await waitFor(
      "the first instance",
      async () => {
        const [row] = await t.db.select().from(operations).where(eq(operations.id, op.id));
        return (row?.progress?.done ?? 0) >= 2;
      },
      45_000,
    );
    await requestCancel(t.db, op.id, { kind: "system", id: null });
    expect(await running).toEqual({ status: "cancelled" });
    const log = (await readLogs(t.db, op.id, { after: 0, limit: 1000 })).lines.map((l) => l.line);
    expect(log).toContain("terraform still running; sending SIGTERM");
  });

  it("reboots one VM through EC2 and terminates one VM through terraform", async () => {
    const fleet = await tfFleet("tf-e");
    await runOp(fleet, "fleet.create", "success", { size: 2 });
    const [one, two] = await live(fleet.id);
    if (!one || !two) throw new Error("rows");
    // The agent registered meanwhile.
    await t.db.update(vms).set({ state: "ready" }).where(eq(vms.fleetId, fleet.id));
    ec2Mock.reset();
    ec2Mock.on(RebootInstancesCommand).resolves({});
    const reboot = await runOp(fleet, "vm.reboot", "success", {}, one.id);
    expect(reboot.result).toEqual({ status: "succeeded" });
    expect(ec2Mock.commandCalls(RebootInstancesCommand)[0]?.args[0].input).toEqual({
      InstanceIds: [one.providerId],
    });
    const [rebooted] = await t.db.select().from(vms).where(eq(vms.id, one.id));
    expect(rebooted?.state).toBe("rebooting");

    await t.db.update(fleets).set({ desiredSize: 1 }).where(eq(fleets.id, fleet.id));
    const term = await runOp(fleet, "vm.terminate", "success", {}, two.id);
    expect(term.result).toEqual({ status: "succeeded" });
    expect((await live(fleet.id)).map((v) => v.name)).toEqual(["tf-e-1"]);
    expect(term.log.join("\n")).toContain("Plan: 0 to add, 0 to change, 1 to destroy.");
    expect(ec2Mock.commandCalls(DescribeInstancesCommand)).toEqual([]);
  });

  it("a cold reboot (automatic recovery) stops the instance, waits until it is stopped, starts it, and records its new address", async () => {
    const fleet = await tfFleet("tf-cold");
    await runOp(fleet, "fleet.create", "success", { size: 1 });
    const [one] = await live(fleet.id);
    if (!one?.providerId) throw new Error("rows");
    // Stuck in a reboot already: the cold reboot goes ahead from there.
    await t.db.update(vms).set({ state: "rebooting" }).where(eq(vms.id, one.id));
    ec2Mock.reset();
    ec2Mock.on(StopInstancesCommand).resolves({});
    ec2Mock
      .on(DescribeInstancesCommand)
      .resolvesOnce({
        Reservations: [{ Instances: [{ InstanceId: one.providerId, State: { Name: "stopped" } }] }],
      })
      .resolves({
        Reservations: [
          {
            Instances: [
              {
                InstanceId: one.providerId,
                State: { Name: "running" },
                PublicIpAddress: "203.0.113.77",
                PrivateIpAddress: one.privateIp ?? "10.0.0.9",
              },
            ],
          },
        ],
      });
    ec2Mock.on(StartInstancesCommand).resolves({});
    const cold = await runOp(fleet, "vm.reboot", "success", { cold: true }, one.id);
    expect(cold.result).toEqual({ status: "succeeded" });
    const ids = { InstanceIds: [one.providerId] };
    expect(ec2Mock.commandCalls(StopInstancesCommand).map((c) => c.args[0].input)).toEqual([ids]);
    expect(ec2Mock.commandCalls(DescribeInstancesCommand)[0]?.args[0].input).toEqual(ids);
    expect(ec2Mock.commandCalls(StartInstancesCommand).map((c) => c.args[0].input)).toEqual([ids]);
    expect(ec2Mock.commandCalls(RebootInstancesCommand)).toEqual([]);
    expect(cold.log.join("\n")).toContain("stopping and starting the instance");
    const [row] = await t.db.select().from(vms).where(eq(vms.id, one.id));
    expect(row?.state).toBe("rebooting");
    expect(row?.publicIp).toBe("203.0.113.77");
  });

  it("a cold reboot of an instance that was terminated meanwhile fails without starting it", async () => {
    const fleet = await tfFleet("tf-cold-gone");
    await runOp(fleet, "fleet.create", "success", { size: 1 });
    const [one] = await live(fleet.id);
    if (!one?.providerId) throw new Error("rows");
    await t.db.update(vms).set({ state: "ready" }).where(eq(vms.id, one.id));
    ec2Mock.reset();
    ec2Mock.on(StopInstancesCommand).resolves({});
    ec2Mock.on(DescribeInstancesCommand).resolves({
      Reservations: [{ Instances: [{ State: { Name: "terminated" } }] }],
    });
    const cold = await runOp(fleet, "vm.reboot", "success", { cold: true }, one.id);
    expect(cold.result).toEqual({ status: "failed" });
    expect(cold.op?.error).toContain("cannot be started again");
    expect(ec2Mock.commandCalls(StartInstancesCommand)).toEqual([]);
  });

  it("fails with a clear message when the binary is missing", async () => {
    const fleet = await tfFleet("tf-f");
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.create",
      params: { size: 1 },
      actor: { kind: "system", id: null },
    });
    const d = new TerraformFleetDriver({
      ledger: fleetLedger(t.db),
      runner: new TerraformRunner({ bin: "/nonexistent/tofu", cancelGraceMs: 1000 }),
      moduleDir,
      workDir,
      backend: { kind: "local" },
      serverUrl: "https://lablink.example.edu",
      agentImage: "a",
      ec2,
    });
    await executeOperation({ db: t.db, drivers: { terraform: d }, log: logger }, op.id);
    const [row] = await t.db.select().from(operations).where(eq(operations.id, op.id));
    expect(row?.error).toBe(
      'the Terraform binary "/nonexistent/tofu" was not found (set LABLINK_TERRAFORM_BIN)',
    );
  });
});

describe("state backend", () => {
  it("keeps local state per fleet, or one S3 key per fleet with locking", async () => {
    const fleet = { id: "f0b1c2d3-0000-4000-8000-000000000000", region: "eu-west-1" } as Fleet;
    expect(backendHcl({ kind: "local" }, fleet)).toContain('path = "terraform.tfstate"');
    const s3 = backendHcl({ kind: "s3", bucket: "lab-state", lockTable: "tf-locks" }, fleet);
    expect(s3).toContain('bucket  = "lab-state"');
    expect(s3).toContain(`key     = "lablink/fleets/${fleet.id}/terraform.tfstate"`);
    expect(s3).toContain('region  = "eu-west-1"');
    expect(s3).toContain('dynamodb_table = "tf-locks"');
    expect(backendHcl({ kind: "s3", bucket: "b" }, fleet)).toContain("use_lockfile = true");
  });
});

describe("a worker without LABLINK_AGENT_IMAGE", () => {
  it("refuses to apply an agent fleet before Terraform runs, saying which setting is missing", async () => {
    const fleet = await tfFleet("no-agent-image");
    await t.db.update(fleets).set({ desiredSize: 1 }).where(eq(fleets.id, fleet.id));
    const before = calls().length;
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.create",
      params: { size: 1 },
      actor: { kind: "system", id: null },
    });
    const result = await executeOperation(
      { db: t.db, drivers: { terraform: driver("success", 5_000, null) }, log: logger },
      op.id,
    );
    expect(result).toEqual({ status: "failed" });
    const log = (await readLogs(t.db, op.id, { after: 0, limit: 1000 })).lines.map((l) => l.line);
    expect(log.join("\n")).toMatch(/LABLINK_AGENT_IMAGE is not set on the worker/);
    expect(calls().length).toBe(before);
    expect(await live(fleet.id)).toEqual([]);
  });
});
