import http from "node:http";
import { afterAll, beforeAll, expect, it } from "vitest";
import { issueAgentToken } from "../../server/auth/agent-tokens";
import type { Vm } from "../../server/db/schema";
import { claimVm } from "../../server/domain/allocation";
import { requestCrdHandoff } from "../../server/domain/handoff";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { startApiServer } from "../http";
import { LegacyClient, type LegacyReply } from "./client";

/**
 * The original server held one database connection per VM waiting in /vm_startup. Here 1,000
 * VMs wait at once, each with its own token, and the database sees no more connections than
 * before they called: they wait on the web process's one LISTEN connection.
 */
const WAITING = 1_000;
const CODE = "4/0AeanS0ZkQx-Thousand_waiting_code";

let t: TestDatabase;
let server: Awaited<ReturnType<typeof startApiServer>>;
// One socket per waiting call, none kept alive: what 1,000 separate VMs would open.
const agent = new http.Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });

beforeAll(async () => {
  t = await createTestDatabase();
  server = await startApiServer(t.db, t.sql, 15);
});
afterAll(async () => {
  agent.destroy();
  await server?.close();
  await t?.drop();
});

async function connections(): Promise<number> {
  const [row] = await t.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database()`;
  return row?.n ?? -1;
}

async function waitFor(what: string, fn: () => boolean | Promise<boolean>, ms = 40_000) {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

it("1,000 VMs waiting in /vm_startup hold no database connection; a hand-off still reaches its VM", async () => {
  const fleet = await makeFleet(t.db, { gpuCount: 0, clientImageCompat: true });
  const vmList = await makeVms(t.db, fleet, WAITING, "ready");
  const tokens: string[] = [];
  for (let i = 0; i < vmList.length; i += 10) {
    tokens.push(
      ...(await Promise.all(vmList.slice(i, i + 10).map((vm) => issueAgentToken(t.db, vm.id)))),
    );
  }
  const clients = vmList.map(
    (vm, i) =>
      new LegacyClient(
        { ALLOCATOR_URL: server.url, API_TOKEN: tokens[i] as string, VM_NAME: vm.name },
        agent,
      ),
  );

  // The LISTEN connection and the pool's connections are open before anyone waits.
  await server.events.listen();
  await Promise.all(Array.from({ length: 10 }, () => t.sql`SELECT pg_sleep(0.05)`));
  const before = await connections();

  const aborts = new AbortController();
  const replies = new Map<string, Promise<LegacyReply>>();
  for (let i = 0; i < clients.length; i += 100) {
    for (const [j, c] of clients.slice(i, i + 100).entries()) {
      const vm = vmList[i + j] as Vm;
      replies.set(
        vm.id,
        c.vmStartup(aborts.signal).catch(() => ({ status: 0, body: "aborted" })),
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const waiting = () => vmList.reduce((n, vm) => n + server.events.waiting(vm.id), 0);
  await waitFor("1,000 waiting calls", () => waiting() === WAITING);

  const during = await connections();
  expect(during).toBe(before);

  // One researcher claims a VM and connects: only that VM's call returns, with the command.
  const user = await makeUser(t.db);
  const actor = { kind: "user" as const, id: user.id };
  const { vm: claimed } = await claimVm(t.db, { userId: user.id, fleetId: fleet.id, actor });
  await requestCrdHandoff(t.db, {
    userId: user.id,
    command: `--code="${CODE}"`,
    pin: "402913",
    actor,
  });
  const reply = (await replies.get(claimed.id)) as LegacyReply;
  expect(reply.status).toBe(200);
  expect(reply.body).toMatchObject({ status: "success", pin: "402913" });
  expect((reply.body as { command: string }).command).toContain(`--code="${CODE}"`);
  expect(waiting()).toBe(WAITING - 1);
  expect(await connections()).toBe(before);

  // VMs that hang up stop waiting: nothing is left behind in the process.
  aborts.abort();
  await waitFor("waiters gone", () => waiting() === 0, 10_000);
});
