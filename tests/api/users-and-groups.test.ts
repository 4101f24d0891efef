import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, type Fleet, users } from "../../server/db/schema";
import { applyAdminBootstrap, emailAllowed, parseEmailList } from "../../server/domain/users";
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

type PoolData = { fleets: { fleetId: string }[]; totals: { ready: number } };

describe("admins", () => {
  it("an admin promotes a researcher, and the audit row names actor, target, IP and time", async () => {
    const admin = await makeUser(t.db, "admin");
    const bob = await makeUser(t.db, "researcher");
    const res = await api.mutate(
      "user.setRole",
      { userId: bob.id, role: "admin" },
      { userId: admin.id, ip: "203.0.113.7" },
    );
    expect(res.status).toBe(200);
    expect(res.data).toMatchObject({ id: bob.id, role: "admin", changed: true });
    const [row] = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.action, "user.promote"), eq(auditEvents.targetId, bob.id)));
    expect(row).toMatchObject({
      actorKind: "user",
      actorId: admin.id,
      targetKind: "user",
      ip: "203.0.113.7",
      details: { from: "researcher", to: "admin" },
    });
    expect(Date.now() - (row?.at.getTime() ?? 0)).toBeLessThan(60_000);
  });

  it("a demoted admin loses admin rights on the very next request", async () => {
    const a = await makeUser(t.db, "admin");
    const b = await makeUser(t.db, "admin");
    expect((await api.query("user.list", undefined, { userId: b.id })).status).toBe(200);
    const demote = await api.mutate(
      "user.setRole",
      { userId: b.id, role: "researcher" },
      { userId: a.id },
    );
    expect(demote.data).toMatchObject({ role: "researcher", changed: true });
    // Same session (the test session carries only the id), next request: refused.
    const after = await api.query("user.list", undefined, { userId: b.id });
    expect(after.status).toBe(403);
    const me = await api.query("user.me", undefined, { userId: b.id });
    expect(me.data).toMatchObject({ id: b.id, role: "researcher" });
  });

  it("the last admin cannot demote themself", async () => {
    // Leave exactly one admin.
    await t.db.update(users).set({ role: "researcher" });
    const last = await makeUser(t.db, "admin");
    const res = await api.mutate(
      "user.setRole",
      { userId: last.id, role: "researcher" },
      { userId: last.id },
    );
    expect(res.status).toBe(409);
    expect(res.error?.message).toMatch(/last admin/);
    const [row] = await t.db.select().from(users).where(eq(users.id, last.id));
    expect(row?.role).toBe("admin");
  });

  it("two admins demoting each other at once leave one admin", async () => {
    await t.db.update(users).set({ role: "researcher" });
    const a = await makeUser(t.db, "admin");
    const b = await makeUser(t.db, "admin");
    const results = await Promise.all([
      api.mutate("user.setRole", { userId: b.id, role: "researcher" }, { userId: a.id }),
      api.mutate("user.setRole", { userId: a.id, role: "researcher" }, { userId: b.id }),
    ]);
    const statuses = results.map((r) => r.status).sort();
    // The loser is either refused as the last admin (409) or no longer an admin (403).
    expect(statuses[0]).toBe(200);
    expect([403, 409]).toContain(statuses[1]);
    const admins = await t.db.select().from(users).where(eq(users.role, "admin"));
    expect(admins).toHaveLength(1);
  });

  it("ADMIN_EMAILS promotes on sign-in, case-insensitively, and audits it", async () => {
    const list = parseEmailList(" Root@Example.edu, ops@example.edu\nx@y.z ");
    expect(list).toEqual(["root@example.edu", "ops@example.edu", "x@y.z"]);
    const u = await makeUser(t.db, "researcher", "root");
    await t.db.update(users).set({ email: "ROOT@example.edu" }).where(eq(users.id, u.id));
    expect(await applyAdminBootstrap(t.db, { id: u.id, email: "ROOT@example.edu" }, list)).toBe(
      true,
    );
    expect(await applyAdminBootstrap(t.db, { id: u.id, email: "ROOT@example.edu" }, list)).toBe(
      false,
    );
    const other = await makeUser(t.db, "researcher");
    expect(await applyAdminBootstrap(t.db, other, list)).toBe(false);
    const [row] = await t.db.select().from(users).where(eq(users.id, u.id));
    expect(row?.role).toBe("admin");
  });

  it("the allow-list takes domains and addresses", () => {
    const allow = parseEmailList("example.edu, @lab.org, guest@gmail.com");
    expect(emailAllowed("a@example.edu", allow)).toBe(true);
    expect(emailAllowed("A@EXAMPLE.EDU", allow)).toBe(true);
    expect(emailAllowed("b@lab.org", allow)).toBe(true);
    expect(emailAllowed("guest@gmail.com", allow)).toBe(true);
    expect(emailAllowed("other@gmail.com", allow)).toBe(false);
    expect(emailAllowed("a@evil-example.edu", allow)).toBe(false);
    expect(emailAllowed("a@example.edu.evil.com", allow)).toBe(false);
    expect(emailAllowed(null, allow)).toBe(false);
    expect(emailAllowed("anyone@anywhere.net", [])).toBe(true);
  });
});

describe("groups and restricted fleets", () => {
  let admin: typeof users.$inferSelect;
  let student: typeof users.$inferSelect;
  let outsider: typeof users.$inferSelect;
  let openFleet: Fleet;
  let a100: Fleet;
  let groupId: string;

  beforeAll(async () => {
    admin = await makeUser(t.db, "admin");
    student = await makeUser(t.db, "researcher");
    outsider = await makeUser(t.db, "researcher");
    openFleet = await makeFleet(t.db, { instanceType: "g5.xlarge" });
    a100 = await makeFleet(t.db, { instanceType: "p4d.24xlarge", gpuModel: "NVIDIA A100" });
    await makeVms(t.db, openFleet, 1, "ready");
    await makeVms(t.db, a100, 2, "ready");
    const g = await api.mutate("group.create", { name: "gpu-course" }, { userId: admin.id });
    expect(g.status).toBe(200);
    groupId = (g.data as { id: string }).id;
    const dup = await api.mutate("group.create", { name: "gpu-course" }, { userId: admin.id });
    expect(dup.status).toBe(409);
    expect(
      (await api.mutate("group.addMember", { groupId, userId: student.id }, { userId: admin.id }))
        .status,
    ).toBe(200);
    const restrict = await api.mutate(
      "group.setFleetGroups",
      { fleetId: a100.id, groupIds: [groupId] },
      { userId: admin.id },
    );
    expect(restrict.status).toBe(200);
  });

  it("pool.summary shows each caller only the fleets they may claim from", async () => {
    const ids = async (auth: { userId?: string }) =>
      ((await api.query("pool.summary", undefined, auth)).data as PoolData).fleets.map(
        (f) => f.fleetId,
      );
    expect(await ids({})).not.toContain(a100.id);
    expect(await ids({})).toContain(openFleet.id);
    expect(await ids({ userId: outsider.id })).not.toContain(a100.id);
    expect(await ids({ userId: student.id })).toEqual(
      expect.arrayContaining([a100.id, openFleet.id]),
    );
    expect(await ids({ userId: admin.id })).toContain(a100.id);
    const outsiderTotals = (
      (await api.query("pool.summary", undefined, { userId: outsider.id })).data as PoolData
    ).totals;
    expect(outsiderTotals.ready).toBe(1);
  });

  it("a researcher outside the group cannot claim the restricted fleet, by id or by type", async () => {
    const byId = await api.mutate("vm.claim", { fleetId: a100.id }, { userId: outsider.id });
    expect(byId.status).toBe(403);
    expect(byId.error?.message).toMatch(/reserved for particular groups/);
    const byType = await api.mutate(
      "vm.claim",
      { instanceType: "p4d.24xlarge" },
      { userId: outsider.id },
    );
    expect(byType.status).toBe(412);
  });

  it("a member claims from the restricted fleet", async () => {
    const res = await api.mutate("vm.claim", { fleetId: a100.id }, { userId: student.id });
    expect(res.status).toBe(200);
  });

  it("removing the member takes effect at once; opening the fleet lets everyone in", async () => {
    await api.mutate("group.removeMember", { groupId, userId: student.id }, { userId: admin.id });
    const members = await api.query("group.members", { groupId }, { userId: admin.id });
    expect(members.data).toEqual([]);
    await api.mutate(
      "group.setFleetGroups",
      { fleetId: a100.id, groupIds: [] },
      { userId: admin.id },
    );
    const res = await api.mutate("vm.claim", { fleetId: a100.id }, { userId: outsider.id });
    expect(res.status).toBe(200);
    const actions = (
      await t.db
        .select({ action: auditEvents.action })
        .from(auditEvents)
        .where(eq(auditEvents.actorId, admin.id))
    ).map((r) => r.action);
    expect(actions).toEqual(
      expect.arrayContaining([
        "group.create",
        "group.add_member",
        "group.remove_member",
        "fleet.set_groups",
      ]),
    );
  });
});
