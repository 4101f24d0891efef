import { mkdtempSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTrpcTransport } from "../../agent/src/client";
import type { CommandActions } from "../../agent/src/commands";
import { silentLogger } from "../../agent/src/log";
import { Agent } from "../../agent/src/loop";
import { createDatabase, type Database } from "../../server/db/client";
import { type EmbeddedHandle, startEmbeddedPostgres } from "../../server/db/embedded";
import { runMigrations } from "../../server/db/migrate";
import { type Vm, vms } from "../../server/db/schema";
import { claimVm, releaseVm } from "../../server/domain/allocation";
import { allJobs } from "../../server/jobs/definitions";
import { JobRunner } from "../../server/jobs/runner";
import { logger } from "../../server/log";
import { makeAgent, makeFleet, makeUser, makeVms } from "../fixtures";
import { startApiServer } from "../http";
import { runJob } from "../jobs";
import { waitFor } from "./helpers/wait";

/**
 * Postgres stopped and started again under a web process (the real agent gateway, tRPC router,
 * event hub and long polls, in this process), a worker (the real pg-boss job runner with the
 * app's job definitions, in this process), agents (the real agent loop over HTTP, in this
 * process) and researchers claiming and releasing through the claim path. Nothing restarts but
 * Postgres.
 */
const freePort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });

const dataDir = mkdtempSync(path.join(os.tmpdir(), "lablink-pg-restart-"));
let port: number;
let pg: EmbeddedHandle;
let database: Database;
let api: Awaited<ReturnType<typeof startApiServer>>;
let worker: JobRunner;
const agents: { agent: Agent; run: Promise<unknown> }[] = [];

beforeAll(async () => {
  port = await freePort();
  pg = await startEmbeddedPostgres({ dataDir, port });
  await runMigrations(pg.url);
  database = createDatabase(pg.url, { max: 5 });
  api = await startApiServer(database.db, database.sql, 1, 0, {
    retryBaseMs: 100,
    retryCapMs: 500,
    degradedPollMs: 300,
  });
  worker = new JobRunner(pg.url, database.db, logger);
  await worker.start(allJobs({ staleSeconds: 60, drivers: {} }));
}, 60_000);
afterAll(async () => {
  await worker?.stop();
  for (const a of agents) a.agent.stop();
  await Promise.allSettled(agents.map((a) => a.run));
  await api?.close();
  await database?.sql.end({ timeout: 1 });
  await pg?.stop();
});

describe("Postgres restarted under load", () => {
  it("web process, long polls and agents recover without a restart; no claim lost or doubled", async () => {
    const { db } = database;
    const fleet = await makeFleet(db, { gpuCount: 0 });
    const list = (await makeVms(db, fleet, 3, "ready")) as Vm[];
    const assigned = new Map<string, string[]>();
    for (const vm of list) {
      const token = await makeAgent(db, vm);
      const actions: CommandActions = {
        assign: async (c) => {
          assigned.set(vm.id, [...(assigned.get(vm.id) ?? []), c.assignmentId]);
        },
        wipe: async () => {},
        connect: async () => {},
      };
      const agent = new Agent({
        vmId: vm.id,
        bootId: `boot-${vm.id}`,
        hostname: vm.name,
        agentVersion: "0.1.0",
        transport: createTrpcTransport({ serverUrl: api.url, token: () => token }),
        createGpuSource: () => ({
          latest: () => ({
            gpus: [],
            health: { healthy: true, reasons: [] },
            takenAt: new Date(),
            source: "simulated" as const,
          }),
          refresh: async () => ({
            gpus: [],
            health: { healthy: true, reasons: [] },
            takenAt: new Date(),
            source: "simulated" as const,
          }),
          dispose: () => {},
        }),
        actions,
        log: silentLogger,
        heartbeatOverrideS: 0.5,
        pollWaitMs: 5_000,
        backoff: { baseMs: 100, capMs: 500 },
        reackAfterMs: 200,
        commandRetryBaseMs: 100,
      });
      agents.push({ agent, run: agent.run() });
    }
    const users = await Promise.all([1, 2, 3].map(() => makeUser(db)));
    const succeeded: { userId: string; vmId: string; assignmentId: string }[] = [];
    let failed = 0;

    /** Every researcher claims, the agents set the VMs up, everyone releases, wipes finish. */
    async function round() {
      const got = await Promise.all(
        users.map(async (u) => {
          try {
            const actor = { kind: "user" as const, id: u.id };
            const { vm } = await claimVm(db, { userId: u.id, fleetId: fleet.id, actor });
            const claim = { userId: u.id, vmId: vm.id, assignmentId: vm.assignmentId as string };
            succeeded.push(claim);
            return claim;
          } catch {
            failed++;
            return null;
          }
        }),
      );
      const claims = got.filter((c) => c !== null);
      // No VM handed to two researchers at once.
      expect(new Set(claims.map((c) => c.vmId)).size).toBe(claims.length);
      for (const c of claims) {
        await waitFor(
          "the agent to set the VM up",
          async () => assigned.get(c.vmId)?.includes(c.assignmentId),
          15_000,
        );
      }
      for (const c of claims)
        await releaseVm(db, { userId: c.userId, actor: { kind: "user", id: c.userId } });
      await waitFor(
        "every VM back in the pool",
        async () => {
          const rows = await db.select().from(vms).where(eq(vms.fleetId, fleet.id));
          return rows.every((r) => r.state === "ready");
        },
        15_000,
      );
    }

    await waitFor("LISTEN to be up", async () => api.events.listening, 10_000);
    await round();
    // The worker runs jobs before...
    expect((await runJob(worker, "vm.expire-holds")).state).toBe("completed");
    const before = succeeded.length;
    expect(before).toBe(3);

    // Postgres goes away while polls wait and agents heartbeat; a claim made meanwhile fails
    // loudly (never half-done), and Postgres comes back on the same port and data.
    await pg.stop();
    const during = await Promise.allSettled(
      users.map((u) =>
        claimVm(db, { userId: u.id, fleetId: fleet.id, actor: { kind: "user", id: u.id } }),
      ),
    );
    expect(during.every((r) => r.status === "rejected")).toBe(true);
    await new Promise((r) => setTimeout(r, 1_000));
    const restartedAt = new Date();
    pg = await startEmbeddedPostgres({ dataDir, port });

    // Pushes come back without restarting anything in this process.
    // Postgres starting up on two busy cores can take a while.
    await waitFor("LISTEN to come back", async () => api.events.listening, 30_000);
    for (let i = 0; i < 3; i++) await round();
    expect(succeeded.length).toBe(before + 9);
    // ...and after, without a restart: its job queue is Postgres too.
    expect((await runJob(worker, "vm.expire-holds")).state).toBe("completed");

    // Agents kept going: every VM heartbeated after the restart.
    await waitFor(
      "heartbeats after the restart",
      async () => {
        const rows = await db.select().from(vms).where(eq(vms.fleetId, fleet.id));
        return rows.every((r) => r.lastHeartbeatAt && r.lastHeartbeatAt > restartedAt);
      },
      10_000,
    );
    // No claim lost or doubled: one audit row per claim that returned, none for the failed ones.
    const [audit] = await db.execute<{ n: number }>(
      sql`SELECT count(*)::int AS n FROM audit_events WHERE action = 'vm.claim'
          AND target_id IN (SELECT id::text FROM vms WHERE fleet_id = ${fleet.id})`,
    );
    expect(audit?.n).toBe(succeeded.length);
    expect(new Set(succeeded.map((c) => c.assignmentId)).size).toBe(succeeded.length);
    // Each agent set up each of its assignments once.
    for (const [vmId, ids] of assigned) {
      expect(ids).toEqual(succeeded.filter((c) => c.vmId === vmId).map((c) => c.assignmentId));
    }
    expect(failed).toBe(0);
  }, 120_000);
});
