import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { and, eq, ne } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalFleetDriver } from "../../server/cloud/local/driver";
import { auditEvents, fleets, type Operation, operations, vms } from "../../server/db/schema";
import { fleetLedger } from "../../server/domain/convergence";
import {
  appendLogs,
  LOG_HEAD,
  LOG_TAIL,
  readLogs,
  requestOperation,
} from "../../server/domain/operations";
import { allJobs } from "../../server/jobs/definitions";
import { startDispatcher } from "../../server/jobs/dispatch";
import { executeOperation } from "../../server/jobs/operations";
import { JobRunner } from "../../server/jobs/runner";
import { logger } from "../../server/log";
import { apiClient } from "../api/harness";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { startApiServer } from "../http";
import { waitFor } from "./helpers/wait";

let t: TestDatabase;
let http: Awaited<ReturnType<typeof startApiServer>>;
let api: ReturnType<typeof apiClient>;
let local: LocalFleetDriver;
let runner: JobRunner | undefined;
let dispatcher: Awaited<ReturnType<typeof startDispatcher>> | undefined;
let admin: Awaited<ReturnType<typeof makeUser>>;
const shutdown = new AbortController();

beforeAll(async () => {
  t = await createTestDatabase();
  http = await startApiServer(t.db, t.sql, 60);
  api = apiClient(t.db);
  admin = await makeUser(t.db, "admin");
  local = new LocalFleetDriver({
    ledger: fleetLedger(t.db),
    serverUrl: http.url,
    rootDir: path.resolve(import.meta.dirname, "../.."),
    stateDir: mkdtempSync(path.join(os.tmpdir(), "lablink-ops-")),
    heartbeatIntervalS: 60,
    log: logger,
  });
  runner = new JobRunner(t.url, t.db, logger);
  await runner.start(
    allJobs({
      staleSeconds: 60,
      drivers: { local },
      shutdown: shutdown.signal,
      operations: { leaseSeconds: 10, renewMs: 200 },
    }),
  );
  dispatcher = await startDispatcher({ db: t.db, sql: t.sql, runner, log: logger, sweepMs: 500 });
});

/** From here on the tests drive the executor themselves; no worker may pick their operations up. */
async function stopWorker() {
  await dispatcher?.stop();
  await runner?.stop();
  dispatcher = undefined;
  runner = undefined;
}

afterAll(async () => {
  await stopWorker();
  await local?.close();
  await http?.close();
  await t?.drop();
});

const asAdmin = () => ({ userId: admin.id });

async function finished(operationId: string, timeoutMs = 30_000): Promise<Operation> {
  return waitFor(
    `operation ${operationId} to finish`,
    async () => {
      const [op] = await t.db.select().from(operations).where(eq(operations.id, operationId));
      return op && ["succeeded", "failed", "cancelled"].includes(op.status) ? op : null;
    },
    timeoutMs,
  );
}

/** Reads a whole log the way the UI does: polling with the cursor until done. */
async function pollLog(operationId: string): Promise<string[]> {
  const out: string[] = [];
  let after = 0;
  for (let i = 0; i < 1000; i++) {
    const res = await api.query("operation.logs", { operationId, after, limit: 2 }, asAdmin());
    expect(res.status).toBe(200);
    const page = res.data as { lines: { line: string }[]; nextCursor: number; done: boolean };
    out.push(...page.lines.map((l) => l.line));
    after = page.nextCursor;
    if (page.done) return out;
    if (page.lines.length === 0) await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("log never finished");
}

const liveVms = (fleetId: string) =>
  t.db
    .select()
    .from(vms)
    .where(and(eq(vms.fleetId, fleetId), ne(vms.state, "terminated")));

describe("local fleet through operations, end to end", () => {
  it("creates 3, scales to 5, reboots one, terminates one, destroys the fleet; the log shows each step", async () => {
    const created = await api.mutate(
      "fleet.create",
      { driver: "local", name: "workshop", instanceType: "local.sim", size: 3 },
      asAdmin(),
    );
    expect(created.status, JSON.stringify(created.error)).toBe(200);
    const { fleetId, operation } = created.data as { fleetId: string; operation: Operation };
    expect(operation.status).toBe("queued");
    expect(await finished(operation.id)).toMatchObject({ status: "succeeded", attempts: 1 });
    await waitFor(
      "3 ready VMs",
      async () => (await liveVms(fleetId)).filter((v) => v.state === "ready").length === 3,
      30_000,
    );
    const createLog = await pollLog(operation.id);
    expect(createLog.join("\n")).toMatch(/creating 3 VM\(s\): workshop-1, workshop-2, workshop-3/);
    expect(createLog.filter((l) => l.startsWith("started agent for"))).toHaveLength(3);
    expect(createLog.at(-1)).toBe("fleet.create succeeded");

    const scaled = await api.mutate("fleet.scale", { fleetId, size: 5 }, asAdmin());
    expect(scaled.status).toBe(200);
    const scaleOp = (scaled.data as { operation: Operation }).operation;
    expect(await finished(scaleOp.id)).toMatchObject({
      status: "succeeded",
      progress: { done: 5, total: 5 },
    });
    expect(await liveVms(fleetId)).toHaveLength(5);
    expect((await pollLog(scaleOp.id)).join("\n")).toMatch(
      /creating 2 VM\(s\): workshop-4, workshop-5/,
    );

    const first = (await liveVms(fleetId)).find((v) => v.name === "workshop-1");
    const reboot = await api.mutate("vm.reboot", { vmId: first?.id }, asAdmin());
    expect(reboot.status, JSON.stringify(reboot.error)).toBe(200);
    const rebootOp = (reboot.data as { operation: Operation }).operation;
    expect(await finished(rebootOp.id)).toMatchObject({ status: "succeeded" });
    expect(await pollLog(rebootOp.id)).toContain("rebooting workshop-1: stopping its agent");
    // The agent starts again, registers, and the VM is back in the pool.
    await waitFor(
      "workshop-1 ready again",
      async () =>
        (await liveVms(fleetId)).find((v) => v.name === "workshop-1" && v.state === "ready"),
      30_000,
    );

    const victim = (await liveVms(fleetId)).find((v) => v.name === "workshop-2");
    if (!victim) throw new Error("workshop-2 missing");
    const term = await api.mutate("vm.terminate", { vmId: victim.id }, asAdmin());
    expect(term.status).toBe(200);
    const termOp = (term.data as { operation: Operation }).operation;
    expect(await finished(termOp.id)).toMatchObject({ status: "succeeded" });
    const after = await liveVms(fleetId);
    expect(after.map((v) => v.name).sort()).toEqual([
      "workshop-1",
      "workshop-3",
      "workshop-4",
      "workshop-5",
    ]);
    const [f] = await t.db.select().from(fleets).where(eq(fleets.id, fleetId));
    expect(f?.desiredSize).toBe(4);
    expect(await pollLog(termOp.id)).toContain("workshop-2 terminated");

    const destroyed = await api.mutate("fleet.destroy", { fleetId }, asAdmin());
    expect(destroyed.status).toBe(200);
    const destroyOp = (destroyed.data as { operation: Operation }).operation;
    expect(await finished(destroyOp.id)).toMatchObject({ status: "succeeded" });
    expect(await liveVms(fleetId)).toHaveLength(0);
    expect(local.runningCount()).toBe(0);
    const [gone] = await t.db.select().from(fleets).where(eq(fleets.id, fleetId));
    expect(gone?.status).toBe("destroyed");
    const destroyLog = await pollLog(destroyOp.id);
    expect(destroyLog.filter((l) => l.startsWith("terminated workshop-"))).toHaveLength(4);

    const list = await api.query("operation.list", { fleetId }, asAdmin());
    const listed = (list.data as { rows: Operation[] }).rows;
    expect(listed.map((o) => o.kind)).toEqual([
      "fleet.destroy",
      "vm.terminate",
      "vm.reboot",
      "fleet.scale",
      "fleet.create",
    ]);
    // Who asked is recorded.
    expect(listed.every((o) => o.requestedBy === admin.id)).toBe(true);
  });
});

describe("a fleet whose researchers have root", () => {
  it("replaces a released VM instead of wiping it: the machine goes, a new one joins the pool (real agents)", async () => {
    const created = await api.mutate(
      "fleet.create",
      {
        driver: "local",
        name: "rootlab",
        instanceType: "local.sim",
        size: 1,
        rootForResearchers: true,
      },
      asAdmin(),
    );
    expect(created.status, JSON.stringify(created.error)).toBe(200);
    const { fleetId, operation } = created.data as { fleetId: string; operation: Operation };
    expect(await finished(operation.id)).toMatchObject({ status: "succeeded" });
    const ready = async () => (await liveVms(fleetId)).filter((v) => v.state === "ready");
    await waitFor("1 ready VM", async () => (await ready()).length === 1, 30_000);
    const [old] = await ready();
    if (!old) throw new Error("no VM");

    const researcher = await makeUser(t.db);
    const claim = await api.mutate("vm.claim", { fleetId }, { userId: researcher.id });
    expect(claim.status, JSON.stringify(claim.error)).toBe(200);
    const release = await api.mutate("vm.release", undefined, { userId: researcher.id });
    expect(release.status, JSON.stringify(release.error)).toBe(200);

    // The agent wipes and acknowledges; the acknowledgement queues vm.replace; the worker runs it.
    const replace = await waitFor(
      "a vm.replace operation to finish",
      async () => {
        const [op] = await t.db
          .select()
          .from(operations)
          .where(and(eq(operations.fleetId, fleetId), eq(operations.kind, "vm.replace")));
        return op && ["succeeded", "failed"].includes(op.status) ? op : null;
      },
      45_000,
    );
    expect(replace).toMatchObject({ status: "succeeded", vmId: old.id });
    const [gone] = await t.db.select().from(vms).where(eq(vms.id, old.id));
    expect(gone?.state).toBe("terminated");
    // A new machine (a new row, agent and token) takes its place; the fleet keeps its size.
    await waitFor("the replacement to be ready", async () => (await ready()).length === 1, 30_000);
    const [fresh] = await ready();
    expect(fresh?.id).not.toBe(old.id);
    expect(await liveVms(fleetId)).toHaveLength(1);
    const [f] = await t.db.select().from(fleets).where(eq(fleets.id, fleetId));
    expect(f?.desiredSize).toBe(1);
    const log = await pollLog(replace.id);
    expect(log.join("\n")).toContain(`${old.name} terminated; creating its replacement`);
  }, 120_000);
});

describe("one operation per fleet", () => {
  beforeAll(stopWorker);

  it("under 20 concurrent requests, exactly one is accepted; the others are told why", async () => {
    // No worker runs from here on: the accepted operation stays queued.
    // A terraform fleet: its scale is an operation (a byo fleet scales at once, with tokens).
    const fleet = await makeFleet(t.db, { driver: "terraform", desiredSize: 1 });
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        api.mutate("fleet.scale", { fleetId: fleet.id, size: i + 2 }, asAdmin()),
      ),
    );
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 409);
    expect(ok).toHaveLength(1);
    expect(refused).toHaveLength(19);
    expect(refused[0]?.error?.message).toMatch(/This fleet is busy: a fleet.scale operation is/);
    const ops = await t.db.select().from(operations).where(eq(operations.fleetId, fleet.id));
    expect(ops).toHaveLength(1);
    // The refused requests wrote nothing: one audit row for the one accepted operation.
    const audits = await t.db
      .select()
      .from(auditEvents)
      .where(
        and(eq(auditEvents.targetId, fleet.id), eq(auditEvents.action, "operation.fleet.scale")),
      );
    expect(audits).toHaveLength(1);
    // Once it is out of the way (cancelled here), the fleet takes the next request.
    const cancel = await api.mutate("operation.cancel", { operationId: ops[0]?.id }, asAdmin());
    expect(cancel.data).toMatchObject({ status: "cancelled" });
    const next = await api.mutate("fleet.scale", { fleetId: fleet.id, size: 2 }, asAdmin());
    expect(next.status).toBe(200);
    // A worker without the fleet's driver fails it with a reason, and the fleet is usable again.
    const nextOp = (next.data as { operation: Operation }).operation;
    expect(await executeOperation({ db: t.db, drivers: {}, log: logger }, nextOp.id)).toEqual({
      status: "failed",
    });
    expect(await finished(nextOp.id)).toMatchObject({
      error: "no worker here runs the terraform driver",
    });
    const [f] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(f?.status).toBe("active");
  });
});

describe("cancel", () => {
  it("cancels a queued operation at once and frees the fleet", async () => {
    const fleet = await makeFleet(t.db, { driver: "byo" });
    // Straight into the table, so no worker is woken before we cancel.
    const [op] = await t.db
      .insert(operations)
      .values({ fleetId: fleet.id, kind: "fleet.scale", params: { size: 3 } })
      .returning();
    const res = await api.mutate("operation.cancel", { operationId: op?.id }, asAdmin());
    expect(res.status, JSON.stringify(res.error)).toBe(200);
    expect(res.data).toMatchObject({ status: "cancelled", cancelRequestedBy: admin.id });
    const again = await api.mutate("operation.cancel", { operationId: op?.id }, asAdmin());
    expect(again.status).toBe(409);
    expect(again.error?.message).toBe("This operation already cancelled.");
  });

  it("stops a running operation: the driver sees the signal and the operation ends cancelled", async () => {
    const fleet = await makeFleet(t.db, { driver: "byo", status: "active" });
    let sawAbort = false;
    const slow = {
      name: "byo" as const,
      apply: (_f: unknown, run?: { signal: AbortSignal; log: (l: string) => void }) =>
        new Promise<void>((_resolve, reject) => {
          run?.log("working…");
          const stop = () => {
            sawAbort = true;
            reject(new Error("interrupted"));
          };
          if (run?.signal.aborted) stop();
          run?.signal.addEventListener("abort", stop);
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
      params: { size: 2 },
      actor: { kind: "user", id: admin.id },
    });
    const run = executeOperation(
      {
        db: t.db,
        drivers: { byo: slow },
        log: logger,
        settings: { leaseSeconds: 10, renewMs: 100 },
      },
      op.id,
    );
    await waitFor("the operation to run", async () => {
      const [o] = await t.db.select().from(operations).where(eq(operations.id, op.id));
      return o?.status === "running" && o.attempts === 1;
    });
    const res = await api.mutate("operation.cancel", { operationId: op.id }, asAdmin());
    expect(res.data).toMatchObject({ status: "running" });
    expect(await run).toEqual({ status: "cancelled" });
    expect(sawAbort).toBe(true);
    const done = await finished(op.id);
    expect(done).toMatchObject({ status: "cancelled", error: "cancelled" });
    const log = (await readLogs(t.db, op.id, { after: 0, limit: 100 })).lines.map((l) => l.line);
    expect(log).toContain("cancel requested; stopping");
    expect(log.at(-1)).toBe("fleet.scale cancelled");
  });
});

describe("idempotency", () => {
  it("a job delivered twice runs the operation once; applying twice creates no duplicate VMs", async () => {
    const fleet = await makeFleet(t.db, { driver: "local", desiredSize: 0, name: "twice" });
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.scale",
      params: { size: 2 },
      actor: { kind: "system", id: null },
    });
    const deps = { db: t.db, drivers: { local }, log: logger };
    const [a, b] = await Promise.all([
      executeOperation(deps, op.id),
      executeOperation(deps, op.id),
    ]);
    expect([a.status, b.status].sort()).toEqual(["not queued", "succeeded"]);
    const [f] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    if (!f) throw new Error("fleet");
    await local.apply(f);
    await local.apply(f);
    expect(await liveVms(fleet.id)).toHaveLength(2);
    await local.destroy(f);
  });
});

describe("the operation log", () => {
  it("keeps the head and the tail of a huge log, in order, and says how much was dropped", async () => {
    const fleet = await makeFleet(t.db, { driver: "byo" });
    const [op] = await t.db
      .insert(operations)
      .values({ fleetId: fleet.id, kind: "fleet.scale", status: "failed" })
      .returning();
    if (!op) throw new Error("op");
    const total = LOG_HEAD + LOG_TAIL + 1_500;
    for (let i = 0; i < total; i += 700) {
      const n = Math.min(700, total - i);
      await appendLogs(
        t.db,
        op.id,
        Array.from({ length: n }, (_, k) => ({
          line: `line ${i + k + 1}`,
          level: "info" as const,
        })),
      );
    }
    const seen: number[] = [];
    let after = 0;
    let dropped = -1;
    for (;;) {
      const page = await readLogs(t.db, op.id, { after, limit: 1000 });
      seen.push(...page.lines.map((l) => l.seq));
      after = page.nextCursor;
      dropped = page.dropped;
      if (page.done) break;
    }
    expect(dropped).toBe(1_500);
    expect(seen).toHaveLength(LOG_HEAD + LOG_TAIL);
    expect(seen.slice(0, 3)).toEqual([1, 2, 3]);
    expect(seen[LOG_HEAD - 1]).toBe(LOG_HEAD);
    expect(seen[LOG_HEAD]).toBe(LOG_HEAD + 1_500 + 1);
    expect(seen.at(-1)).toBe(total);
  });

  it("never stores a token, even one a driver forgot to declare", async () => {
    const fleet = await makeFleet(t.db, { driver: "local", desiredSize: 0, name: "leaky" });
    const [vm] = await makeVms(t.db, fleet, 1, "ready");
    if (!vm) throw new Error("vm");
    const { issueAgentToken } = await import("../../server/auth/agent-tokens");
    const token = await issueAgentToken(t.db, vm.id);
    const leaky = {
      name: "local" as const,
      apply: async (_f: unknown, run?: { log: (l: string) => void }) => {
        run?.log(`user data: LABLINK_AGENT_TOKEN=${token} and again ${token}`);
        run?.log('{"aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}');
      },
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
    await executeOperation({ db: t.db, drivers: { local: leaky }, log: logger }, op.id);
    const text = (await readLogs(t.db, op.id, { after: 0, limit: 100 })).lines
      .map((l) => l.line)
      .join("\n");
    expect(text).toContain("user data: LABLINK_AGENT_TOKEN=[redacted] and again [redacted]");
    expect(text).not.toContain(token);
    expect(text).not.toContain("wJalrXUtnFEMI");
  });
});

describe("access", () => {
  it("an unknown operation is a 404", async () => {
    const id = "00000000-0000-4000-8000-000000000000";
    for (const path of ["operation.get", "operation.logs"]) {
      const res = await api.query(path, { operationId: id }, asAdmin());
      expect(res.status, path).toBe(404);
      expect(res.error?.message).toBe("No such operation.");
    }
    const cancel = await api.mutate("operation.cancel", { operationId: id }, asAdmin());
    expect(cancel.status).toBe(404);
  });

  it("refuses to reboot or terminate a VM that is gone", async () => {
    const fleet = await makeFleet(t.db, { driver: "byo" });
    const [vm] = await makeVms(t.db, fleet, 1, "terminated");
    const res = await api.mutate("vm.terminate", { vmId: vm?.id }, asAdmin());
    expect(res.status).toBe(409);
    expect(res.error?.message).toMatch(/is already terminated/);
  });

  it("a researcher can neither read operations nor start them", async () => {
    const researcher = await makeUser(t.db, "researcher");
    const res = await api.query("operation.list", {}, { userId: researcher.id });
    expect(res.status).toBe(403);
  });

  it("creating a fleet with a taken name is a 409 and writes nothing", async () => {
    await makeFleet(t.db, { name: "taken" });
    const res = await api.mutate(
      "fleet.create",
      { driver: "local", name: "taken", instanceType: "local.sim", size: 1 },
      asAdmin(),
    );
    expect(res.status).toBe(409);
    expect(res.error?.message).toBe('A fleet named "taken" already exists.');
  });

  it("refuses SSH open to the world for a terraform fleet", async () => {
    const res = await api.mutate(
      "fleet.create",
      {
        driver: "terraform",
        name: "open",
        instanceType: "g5.xlarge",
        size: 1,
        region: "us-west-2",
        image: "ghcr.io/example/research:1",
        config: { allowedSshCidrs: ["0.0.0.0/0"] },
      },
      asAdmin(),
    );
    expect(res.status).toBe(400);
    expect(JSON.stringify(res.error)).toMatch(/whole internet/);
  });
});
