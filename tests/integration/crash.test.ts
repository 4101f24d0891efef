import { fork } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { and, eq, isNull, ne } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyAgentToken } from "../../server/auth/agent-tokens";
import { Ec2Fleet } from "../../server/cloud/ec2/ec2";
import { LocalFleetDriver } from "../../server/cloud/local/driver";
import { TerraformFleetDriver } from "../../server/cloud/terraform/driver";
import { TerraformRunner } from "../../server/cloud/terraform/runner";
import {
  agentCredentials,
  auditEvents,
  type Fleet,
  fleets,
  operations,
  vms,
} from "../../server/db/schema";
import { fleetLedger } from "../../server/domain/convergence";
import { readLogs, recoverInterrupted, requestOperation } from "../../server/domain/operations";
import { executeOperation, settleOperations } from "../../server/jobs/operations";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet } from "../fixtures";
import { startApiServer } from "../http";
import { waitFor } from "./helpers/wait";

let t: TestDatabase;
let http: Awaited<ReturnType<typeof startApiServer>>;
let local: LocalFleetDriver;
const stateDir = mkdtempSync(path.join(os.tmpdir(), "lablink-crash-"));

beforeAll(async () => {
  t = await createTestDatabase();
  http = await startApiServer(t.db, t.sql, 60);
  local = new LocalFleetDriver({
    ledger: fleetLedger(t.db),
    serverUrl: http.url,
    rootDir: path.resolve(import.meta.dirname, "../.."),
    stateDir,
    heartbeatIntervalS: 60,
    log: logger,
  });
});
afterAll(async () => {
  await local?.close();
  await http?.close();
  await t?.drop();
});

/** Starts the crash worker on an operation and resolves once it is half-way through. */
async function startDoomedWorker(
  operationId: string,
  extra: string[] = [],
  env: Record<string, string> = {},
) {
  const child = fork(
    path.join(import.meta.dirname, "helpers/crash-worker.ts"),
    [t.url, operationId, http.url, stateDir, ...extra],
    {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "ignore", "inherit", "ipc"],
      env: { ...process.env, LOG_LEVEL: "silent", ...env },
    },
  );
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(async () => {
      const log = await readLogs(t.db, operationId, { after: 0, limit: 100 });
      child.kill("SIGKILL");
      reject(
        new Error(
          `crash worker never got half-way: ${JSON.stringify(log.lines.map((l) => l.line))}`,
        ),
      );
    }, 20_000);
    child.once("message", () => {
      clearTimeout(timer);
      resolve();
    });
    child.once("exit", (code) => reject(new Error(`crash worker exited early (${code})`)));
  });
  return child;
}

const getOp = async (id: string) =>
  (await t.db.select().from(operations).where(eq(operations.id, id)))[0];

describe("a worker killed with SIGKILL mid-run", () => {
  it("is detected once its lease runs out; the operation is retried and finishes with no duplicate VMs", async () => {
    const fleet = await makeFleet(t.db, { driver: "local", name: "crashy", desiredSize: 0 });
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.scale",
      params: { size: 3 },
      actor: { kind: "system", id: null },
    });
    const child = await startDoomedWorker(op.id);
    expect(await getOp(op.id)).toMatchObject({ status: "running", attempts: 1 });
    const rowsBefore = await t.db.select().from(vms).where(eq(vms.fleetId, fleet.id));
    expect(rowsBefore).toHaveLength(3);

    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    // Nothing notices before the lease runs out (2 s)...
    expect(await recoverInterrupted(t.db)).toEqual([]);
    const recovered = await waitFor(
      "the lease to expire",
      async () => {
        const r = await recoverInterrupted(t.db);
        return r.length ? r : null;
      },
      10_000,
      250,
    );
    expect(recovered).toEqual([{ id: op.id, outcome: "requeued", attempts: 1 }]);
    expect(await getOp(op.id)).toMatchObject({ status: "queued", leaseOwner: null });
    const audit = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.targetId, op.id), eq(auditEvents.action, "operation.interrupted")));
    expect(audit).toHaveLength(1);

    // Another worker picks it up; the driver's apply is idempotent.
    const result = await executeOperation({ db: t.db, drivers: { local }, log: logger }, op.id);
    expect(result).toEqual({ status: "succeeded" });
    expect(await getOp(op.id)).toMatchObject({ status: "succeeded", attempts: 2 });
    const live = await t.db
      .select()
      .from(vms)
      .where(and(eq(vms.fleetId, fleet.id), ne(vms.state, "terminated")));
    expect(live.map((v) => v.name).sort()).toEqual(["crashy-1", "crashy-2", "crashy-3"]);
    expect(new Set(live.map((v) => v.id))).toEqual(new Set(rowsBefore.map((v) => v.id)));
    expect(local.runningCount()).toBe(3);
    const log = (await readLogs(t.db, op.id, { after: 0, limit: 100 })).lines.map((l) => l.line);
    expect(log).toContain("half-way: waiting for the cloud");
    expect(log.join("\n")).toMatch(
      /worker running this operation stopped \(attempt 1 of 3\); queued again/,
    );
    expect(log.join("\n")).toMatch(/started \(attempt 2 of 3\)/);
    await local.destroy({ ...fleet });
  });

  it("fails the operation once its attempts are used up", async () => {
    const fleet = await makeFleet(t.db, { driver: "local", name: "doomed", desiredSize: 0 });
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.scale",
      params: { size: 1 },
      actor: { kind: "system", id: null },
      maxAttempts: 1,
    });
    const child = await startDoomedWorker(op.id);
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    const recovered = await waitFor(
      "the lease to expire",
      async () => {
        const r = await recoverInterrupted(t.db);
        return r.length ? r : null;
      },
      10_000,
      250,
    );
    expect(recovered).toEqual([{ id: op.id, outcome: "failed", attempts: 1 }]);
    expect(await getOp(op.id)).toMatchObject({
      status: "failed",
      error: "interrupted: the worker stopped during the run (1 of 1 attempts used)",
    });
    // The VM row the dead run created still exists; its agent died with the worker. The next
    // apply (or the reconciler, for cloud fleets) takes care of it.
    const rows = await t.db.select().from(vms).where(eq(vms.fleetId, fleet.id));
    expect(rows).toHaveLength(1);
  });

  it("during a Terraform apply: retried, the instance created before the crash is adopted, not duplicated", async () => {
    const standIn = path.resolve(import.meta.dirname, "../terraform-stand-in/terraform");
    const workDir = mkdtempSync(path.join(os.tmpdir(), "lablink-crash-tf-"));
    const fleet = await makeFleet(t.db, {
      name: "crash-tf",
      driver: "terraform",
      region: "us-west-2",
      image: "ghcr.io/example/research:1",
      status: "creating",
    });
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.create",
      params: { size: 2 },
      actor: { kind: "system", id: null },
    });
    const child = await startDoomedWorker(op.id, ["terraform", standIn, workDir]);
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    await waitFor(
      "the lease to expire",
      async () => (await recoverInterrupted(t.db)).length > 0,
      10_000,
      250,
    );
    // Nothing points at nothing: the rows have no instance id yet.
    const mid = await t.db.select().from(vms).where(eq(vms.fleetId, fleet.id));
    expect(mid.map((v) => [v.name, v.state, v.providerId])).toEqual([
      ["crash-tf-1", "provisioning", null],
      ["crash-tf-2", "provisioning", null],
    ]);

    const callsFile = path.join(workDir, "calls.jsonl");
    const terraform = new TerraformFleetDriver({
      ledger: fleetLedger(t.db),
      runner: new TerraformRunner({
        bin: standIn,
        cancelGraceMs: 1_000,
        env: { STANDIN_SCENARIO: "success", STANDIN_CALLS: callsFile },
      }),
      moduleDir: path.resolve(import.meta.dirname, "../../terraform"),
      workDir,
      backend: { kind: "local" },
      serverUrl: "https://lablink.example.edu",
      agentImage: "agent",
      ec2: new Ec2Fleet(),
    });
    const result = await executeOperation({ db: t.db, drivers: { terraform }, log: logger }, op.id);
    expect(result).toEqual({ status: "succeeded" });
    const rows = await t.db.select().from(vms).where(eq(vms.fleetId, fleet.id)).orderBy(vms.name);
    expect(rows.map((v) => [v.name, v.state])).toEqual([
      ["crash-tf-1", "booting"],
      ["crash-tf-2", "booting"],
    ]);
    // Only the VM without an instance got a (new) token; the adopted one kept its first.
    const plan = readFileSync(callsFile, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .find((c) => c.args[0] === "plan");
    expect(plan.withToken).toEqual(["crash-tf-2"]);
    const log = (await readLogs(t.db, op.id, { after: 0, limit: 500 })).lines.map((l) => l.line);
    expect(log).toContain(`crash-tf-1: instance ${rows[0]?.providerId} booting`);
    expect(log.join("\n")).toContain("Plan: 1 to add, 0 to change, 0 to destroy.");
  }, 120_000);
});

describe("a worker killed mid-apply while Terraform runs on (as real Terraform does)", () => {
  it("re-running the operation leaves every created instance with a token that works", async () => {
    const standIn = path.resolve(import.meta.dirname, "../terraform-stand-in/terraform");
    const workDir = mkdtempSync(path.join(os.tmpdir(), "lablink-crash-orphan-"));
    const release = path.join(workDir, "release");
    const fleet = await makeFleet(t.db, {
      name: "orphan-tf",
      driver: "terraform",
      region: "us-west-2",
      image: "ghcr.io/example/research:1",
      status: "creating",
      desiredSize: 2,
    });
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.create",
      params: { size: 2 },
      actor: { kind: "system", id: null },
    });
    const child = await startDoomedWorker(op.id, ["terraform", standIn, workDir, "orphan"], {
      STANDIN_RELEASE: release,
    });
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));

    const terraform = new TerraformFleetDriver({
      ledger: fleetLedger(t.db),
      runner: new TerraformRunner({ bin: standIn, cancelGraceMs: 1_000 }),
      moduleDir: path.resolve(import.meta.dirname, "../../terraform"),
      workDir,
      backend: { kind: "local" },
      serverUrl: "https://lablink.example.edu",
      agentImage: "agent",
      ec2: new Ec2Fleet(),
    });
    const [current] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    // The orphaned apply still holds the state lock: the re-run fails, after minting a new token
    // for the VM whose instance the orphan is still creating.
    await expect(terraform.apply(current as Fleet)).rejects.toThrow(/state lock/);
    // The orphan finishes: the second instance boots with the token the killed run gave it.
    writeFileSync(release, "");
    const state = path.join(workDir, fleet.id, "terraform.tfstate");
    const booted = await waitFor(
      "the orphaned apply to finish",
      async () => {
        if (existsSync(path.join(workDir, fleet.id, ".terraform.tfstate.lock.info"))) return null;
        const s = JSON.parse(readFileSync(state, "utf8"));
        return Object.keys(s.instances).length === 2
          ? (s.userDataTokens as Record<string, string>)
          : null;
      },
      10_000,
    );
    await terraform.apply(current as Fleet);
    const rows = await t.db.select().from(vms).where(eq(vms.fleetId, fleet.id)).orderBy(vms.name);
    expect(rows.map((v) => [v.name, v.state, !!v.providerId])).toEqual([
      ["orphan-tf-1", "booting", true],
      ["orphan-tf-2", "booting", true],
    ]);
    // Every instance's agent can register with the token in its user data...
    for (const vm of rows) {
      const token = booted[vm.name] as string;
      expect(await verifyAgentToken(t.db, token)).toMatchObject({ vmId: vm.id });
      // ...and once it has, the other tokens minted for that VM are dead.
      const live = await t.db
        .select()
        .from(agentCredentials)
        .where(and(eq(agentCredentials.vmId, vm.id), isNull(agentCredentials.revokedAt)));
      expect(live).toHaveLength(1);
    }
  }, 120_000);
});

// No dispatcher runs in this file, so nothing else picks the operation up.
describe("worker shutdown", () => {
  it("stops a running operation and queues it again for the next worker", async () => {
    const fleet = await makeFleet(t.db, { driver: "byo", status: "active" });
    const slow = {
      name: "byo" as const,
      apply: (_f: unknown, run?: { signal: AbortSignal }) =>
        new Promise<void>((_resolve, reject) => {
          // The worker may begin stopping before the driver starts listening.
          if (run?.signal.aborted) reject(new Error("interrupted"));
          run?.signal.addEventListener("abort", () => reject(new Error("interrupted")));
        }),
      destroy: async () => {},
      terminateVm: async () => {},
      rebootVm: async () => {},
      describe: async () => [],
      close: async () => {},
    };
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.scale",
      params: { size: 1 },
      actor: { kind: "system", id: null },
    });
    const stopping = new AbortController();
    const run = executeOperation(
      { db: t.db, drivers: { byo: slow }, log: logger, shutdown: stopping.signal },
      op.id,
    );
    await waitFor("the operation to run", async () => {
      const [o] = await t.db.select().from(operations).where(eq(operations.id, op.id));
      return o?.status === "running";
    });
    stopping.abort();
    await settleOperations(5_000);
    expect(await run).toEqual({ status: "queued" });
    const [o] = await t.db.select().from(operations).where(eq(operations.id, op.id));
    expect(o).toMatchObject({ status: "queued", error: null, attempts: 1, leaseOwner: null });
  });
});
