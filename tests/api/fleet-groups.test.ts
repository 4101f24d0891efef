import { eq } from "drizzle-orm";
import { afterAll, beforeAll, expect, it } from "vitest";
import { fleetGroups, fleets, groupMembers, groups } from "../../server/db/schema";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser } from "../fixtures";
import { apiClient, tableCounts } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
});
afterAll(() => t.drop());

const base = { driver: "local", instanceType: "local.sim", gpuCount: 1, size: 0 };

it("fleet.create restricts the new fleet to the chosen groups, in the same transaction", async () => {
  const admin = await makeUser(t.db, "admin");
  const [course] = await t.db.insert(groups).values({ name: "course-101" }).returning();
  if (!course) throw new Error("group");
  const name = `grp-${crypto.randomUUID().slice(0, 6)}`;
  const res = await api.mutate(
    "fleet.create",
    { ...base, name, groupIds: [course.id] },
    { userId: admin.id },
  );
  expect(res.status).toBe(200);
  const [fleet] = await t.db.select().from(fleets).where(eq(fleets.name, name));
  const links = await t.db
    .select()
    .from(fleetGroups)
    .where(eq(fleetGroups.fleetId, fleet?.id ?? ""));
  expect(links.map((l) => l.groupId)).toEqual([course.id]);

  // An unknown group: a clear 404 and nothing written (no fleet, no operation, no audit row).
  const before = await tableCounts(t.db);
  const bad = await api.mutate(
    "fleet.create",
    { ...base, name: `grp-${crypto.randomUUID().slice(0, 6)}`, groupIds: [crypto.randomUUID()] },
    { userId: admin.id },
  );
  expect(bad.status).toBe(404);
  expect(bad.error?.message).toMatch(/group/i);
  expect(await tableCounts(t.db)).toEqual(before);
});

it("profile.groups lists the researcher's groups and the restricted fleets each opens", async () => {
  const ada = await makeUser(t.db, "researcher", "ada-groups");
  const other = await makeUser(t.db, "researcher", "no-groups");
  const [lab] = await t.db
    .insert(groups)
    .values({ name: "lab-a", description: "Lab A" })
    .returning();
  const [empty] = await t.db.insert(groups).values({ name: "lab-b" }).returning();
  if (!lab || !empty) throw new Error("groups");
  await t.db.insert(groupMembers).values([
    { groupId: lab.id, userId: ada.id },
    { groupId: empty.id, userId: ada.id },
  ]);
  const open = await makeFleet(t.db, { name: `gpu-a-${crypto.randomUUID().slice(0, 4)}` });
  const gone = await makeFleet(t.db, {
    name: `gone-${crypto.randomUUID().slice(0, 4)}`,
    status: "destroyed",
  });
  await t.db.insert(fleetGroups).values([
    { fleetId: open.id, groupId: lab.id },
    { fleetId: gone.id, groupId: lab.id },
  ]);
  const res = await api.query("profile.groups", undefined, { userId: ada.id });
  expect(res.status).toBe(200);
  expect(res.data).toEqual([
    { id: lab.id, name: "lab-a", description: "Lab A", fleets: [open.name] },
    { id: empty.id, name: "lab-b", description: null, fleets: [] },
  ]);
  expect((await api.query("profile.groups", undefined, { userId: other.id })).data).toEqual([]);
});

it("group.list counts each group's members and names the fleets it opens", async () => {
  const admin = await makeUser(t.db, "admin");
  const member = await makeUser(t.db, "researcher");
  const [g] = await t.db.insert(groups).values({ name: "listed-group" }).returning();
  if (!g) throw new Error("group");
  await t.db.insert(groupMembers).values({ groupId: g.id, userId: member.id });
  const fleet = await makeFleet(t.db, { name: `listed-${crypto.randomUUID().slice(0, 4)}` });
  await t.db.insert(fleetGroups).values({ fleetId: fleet.id, groupId: g.id });
  const res = await api.query("group.list", undefined, { userId: admin.id });
  const listed = (res.data as { id: string; members: number; fleets: string[] }[]).find(
    (x) => x.id === g.id,
  );
  expect(listed).toMatchObject({ members: 1, fleets: [fleet.name] });
});
