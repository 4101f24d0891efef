import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { apiClient } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
});
afterAll(() => t.drop());

type Page = { rows: { name: string; holder: { email: string } | null }[]; total: number };

it("vm.list filters by state, fleet, health, holder and a search on name or researcher", async () => {
  const admin = await makeUser(t.db, "admin", "list-admin");
  const grace = await makeUser(t.db, "researcher", "grace");
  const alan = await makeUser(t.db, "researcher", "alan");
  const a = await makeFleet(t.db, { name: "alpha" });
  const b = await makeFleet(t.db, { name: "beta" });
  await makeVms(t.db, a, 3, "ready");
  await makeVms(t.db, a, 1, "claimed", {
    holderId: grace.id,
    idleSince: new Date(Date.now() - 3_600_000),
  });
  await makeVms(t.db, b, 1, "claimed", { holderId: alan.id });
  await makeVms(t.db, b, 2, "booting", { healthy: false });
  const list = async (input: object) => {
    const res = await api.query("vm.list", { limit: 50, ...input }, { userId: admin.id });
    expect(res.status).toBe(200);
    return res.data as Page;
  };

  expect((await list({})).total).toBe(7);
  expect((await list({ fleetId: a.id })).total).toBe(4);
  expect((await list({ states: ["booting"] })).total).toBe(2);
  expect((await list({ healthy: false })).total).toBe(2);
  const held = await list({ held: true });
  expect(held.total).toBe(2);
  expect(held.rows.every((r) => r.holder !== null)).toBe(true);
  expect((await list({ held: false })).total).toBe(5);
  // Held but idle: the VMs to reclaim.
  const idle = await list({ held: true, idle: true });
  expect(idle.rows.map((r) => r.holder?.email)).toEqual([grace.email]);
  expect((await list({ idle: false })).total).toBe(6);
  expect((await list({ held: true, fleetId: b.id })).rows.map((r) => r.holder?.email)).toEqual([
    alan.email,
  ]);
  // Search reaches the holder's email and name, not only the VM's name.
  expect((await list({ search: grace.email })).rows.map((r) => r.holder?.email)).toEqual([
    grace.email,
  ]);
  expect((await list({ search: "beta-vm" })).total).toBe(3);
  // Pagination: the total stays the filtered total.
  const page = await list({ fleetId: a.id, limit: 2, offset: 2 });
  expect(page.rows).toHaveLength(2);
  expect(page.total).toBe(4);
  // A caller's mistake is a 400, not a 500.
  const bad = await api.query("vm.list", { held: "yes" }, { userId: admin.id });
  expect(bad.status).toBe(400);
});
