import { eq, sql } from "drizzle-orm";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTrpcTransport } from "../../agent/src/client";
import { type Vm, vms } from "../../server/db/schema";
import { claimVm } from "../../server/domain/allocation";
import type { AgentReply } from "../../server/protocol/agent";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeAgent, makeFleet, makeUser, makeVms } from "../fixtures";
import { startApiServer } from "../http";
import { startTcpProxy } from "./helpers/tcp-proxy";
import { waitFor } from "./helpers/wait";

let t: TestDatabase;
let proxy: Awaited<ReturnType<typeof startTcpProxy>>;
let listenSql: postgres.Sql;
let api: Awaited<ReturnType<typeof startApiServer>>;

beforeAll(async () => {
  t = await createTestDatabase();
  const url = new URL(t.url);
  proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port) });
  // The event hub reaches Postgres through the proxy; everything else directly.
  url.port = String(proxy.port);
  listenSql = postgres(url.toString(), { max: 1, onnotice: () => {} });
  proxy.disable(); // the web process's first LISTEN connection fails
  api = await startApiServer(t.db, listenSql, 60, 0, {
    retryBaseMs: 50,
    retryCapMs: 200,
    degradedPollMs: 300,
  });
});
afterAll(async () => {
  await api?.close();
  await listenSql?.end({ timeout: 1 });
  await proxy?.close();
  await t?.drop();
});

async function readyVm() {
  const fleet = await makeFleet(t.db, { gpuCount: 0 });
  const [vm] = (await makeVms(t.db, fleet, 1, "ready")) as [Vm];
  const token = await makeAgent(t.db, vm);
  const transport = createTrpcTransport({ serverUrl: api.url, token: () => token });
  return { vm, fleet, transport };
}

/** A long poll, and how long it took to answer. */
async function timedPoll(
  transport: ReturnType<typeof createTrpcTransport>,
  vmId: string,
  waitMs: number,
) {
  const start = Date.now();
  const reply: AgentReply = await transport.poll({ vmId, waitMs }, AbortSignal.timeout(30_000));
  return { reply, ms: Date.now() - start };
}

async function claimWhilePolling(waitMs: number) {
  const { vm, fleet, transport } = await readyVm();
  const user = await makeUser(t.db);
  const polling = timedPoll(transport, vm.id, waitMs);
  // Let the poll reach the server and start waiting.
  await waitFor("the poll to wait", async () => api.events.waiting(vm.id) > 0, 5_000, 10);
  await claimVm(t.db, { userId: user.id, fleetId: fleet.id, actor: { kind: "user", id: user.id } });
  const { reply, ms } = await polling;
  expect(reply.commands.map((c) => c.type)).toEqual(["assign"]);
  return ms;
}

const terminateListenBackend = async () => {
  const rows = await t.db.execute<{ pid: number }>(
    sql`SELECT pg_terminate_backend(pid), pid FROM pg_stat_activity
        WHERE datname = current_database() AND query = 'LISTEN lablink_vm'`,
  );
  return rows.length;
};

describe("the web process's LISTEN connection", () => {
  it("a failed first LISTEN does not fail long polls, and is retried until pushes work", async () => {
    // While the first connection cannot be made, a long poll still answers (degraded: it looks
    // at the database every few hundred ms) and an assignment still arrives.
    expect(await claimWhilePolling(20_000)).toBeLessThan(3_000);
    proxy.enable();
    await waitFor("LISTEN to be established", async () => api.events.listening, 10_000, 20);
    // Pushes again: a claim reaches the waiting poll at once.
    expect(await claimWhilePolling(20_000)).toBeLessThan(1_000);
  });

  it("pg_terminate_backend on it mid-run, with Postgres unreachable for a while: agents keep receiving assignments", async () => {
    await waitFor("LISTEN to be up", async () => api.events.listening, 10_000, 20);
    const before = api.events.stats.connects;
    // Cut it while polls wait, and keep Postgres away for a second. Terminate first: disabling
    // the proxy drops its sockets, and the backend may be gone before the query looks for it.
    expect(await terminateListenBackend()).toBe(1);
    proxy.disable();
    expect(await claimWhilePolling(20_000)).toBeLessThan(3_000);
    await new Promise((r) => setTimeout(r, 1_000));
    proxy.enable();
    await waitFor("LISTEN to come back", async () => api.events.stats.connects > before, 10_000);
    expect(api.events.listening).toBe(true);
    for (let i = 0; i < 3; i++) expect(await claimWhilePolling(20_000)).toBeLessThan(1_000);
    // Once more, with Postgres reachable: reconnects at once.
    const again = api.events.stats.connects;
    expect(await terminateListenBackend()).toBe(1);
    await waitFor("LISTEN to come back", async () => api.events.stats.connects > again, 10_000);
    expect(await claimWhilePolling(20_000)).toBeLessThan(1_000);
    const [row] = await t.db.select().from(vms).where(eq(vms.state, "claimed")).limit(1);
    expect(row).toBeDefined();
  });
});
