import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, type users } from "../../server/db/schema";
import { redactDetails } from "../../server/domain/audit";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeUser } from "../fixtures";
import { apiClient } from "./harness";

type Row = {
  id: number;
  at: Date;
  action: string;
  actorKind: string;
  actorId: string | null;
  actorEmail: string | null;
  targetKind: string;
  targetId: string | null;
  details: Record<string, unknown>;
};
type Page = { rows: Row[]; nextCursor: number | null };

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let admin: typeof users.$inferSelect;
let researcher: typeof users.$inferSelect;
const VM = "11111111-1111-4111-8111-111111111111";
const FLEET = "22222222-2222-4222-8222-222222222222";

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  admin = await makeUser(t.db, "admin");
  researcher = await makeUser(t.db, "researcher");
  // 30 events in the same microsecond (ties broken by id), then a few at distinct times.
  const same = new Date("2026-01-01T10:00:00.123Z");
  await t.db.insert(auditEvents).values(
    Array.from({ length: 30 }, (_, i) => ({
      at: same,
      actorKind: "user" as const,
      actorId: researcher.id,
      action: i % 2 ? "vm.claim" : "vm.release",
      targetKind: "vm",
      targetId: VM,
      details: { n: i },
    })),
  );
  // Microseconds that a JavaScript Date cannot hold: a cursor built from a Date would skip these.
  await t.db.execute(sql`
    INSERT INTO audit_events (at, actor_kind, actor_id, action, target_kind, target_id, details)
    SELECT '2026-01-02T10:00:00.123456Z'::timestamptz + (g || ' microseconds')::interval, 'user',
           ${admin.id}, 'fleet.create', 'fleet', ${FLEET}, jsonb_build_object('n', g)
    FROM generate_series(1, 7) g`);
  await t.db.insert(auditEvents).values([
    {
      at: new Date("2026-01-03T00:00:00Z"),
      actorKind: "agent",
      actorId: VM,
      action: "vm.crd_failed",
      targetKind: "vm",
      targetId: VM,
      details: { error: "start-host said token=abcdefghijklmnop", pin: "123456", requestId: "r1" },
    },
    {
      at: new Date("2026-01-04T00:00:00Z"),
      actorKind: "system",
      actorId: null,
      action: "reconcile.orphan",
      targetKind: "instance",
      targetId: "i-0abc",
      details: {},
    },
  ]);
});
afterAll(() => t.drop());

const asAdmin = () => ({ userId: admin.id });
async function list(input: Record<string, unknown>): Promise<Page> {
  const res = await api.query("audit.list", input, asAdmin());
  expect(res.status, JSON.stringify(res.error)).toBe(200);
  return res.data as Page;
}

/** Every page in turn, following nextCursor. */
async function all(input: Record<string, unknown>, limit: number): Promise<Row[]> {
  const out: Row[] = [];
  let cursor: number | undefined;
  for (let i = 0; i < 100; i++) {
    const page = await list({ ...input, limit, ...(cursor ? { cursor } : {}) });
    out.push(...page.rows);
    if (page.nextCursor === null) return out;
    cursor = page.nextCursor;
  }
  throw new Error("pagination did not end");
}

describe("audit.list", () => {
  it("pages through every row exactly once, newest first, across equal timestamps", async () => {
    const rows = await all({}, 4);
    expect(rows).toHaveLength(39);
    expect(new Set(rows.map((r) => r.id)).size).toBe(39);
    for (let i = 1; i < rows.length; i++) {
      const [a, b] = [rows[i - 1] as Row, rows[i] as Row];
      expect(
        a.at.getTime() > b.at.getTime() || (a.at.getTime() === b.at.getTime() && a.id > b.id),
      ).toBe(true);
    }
    // Pages that end inside the microsecond-apart rows lose none of them.
    const fleetRows = await all({ action: "fleet.create" }, 2);
    expect(fleetRows.map((r) => r.details.n)).toEqual([7, 6, 5, 4, 3, 2, 1]);
  });

  it("filters by exact action and by action prefix", async () => {
    const claims = await all({ action: "vm.claim" }, 50);
    expect(claims).toHaveLength(15);
    expect(claims.every((r) => r.action === "vm.claim")).toBe(true);
    const vm = await all({ action: "vm.*" }, 50);
    expect(vm).toHaveLength(31);
    expect(vm.every((r) => r.action.startsWith("vm."))).toBe(true);
    // `_` is not a wildcard: no action starts with "vm_".
    expect((await list({ action: "vm_*" })).rows).toHaveLength(0);
  });

  it("filters by actor kind, actor id and actor email, and names the acting user", async () => {
    expect((await all({ actorKind: "system" }, 50)).map((r) => r.action)).toEqual([
      "reconcile.orphan",
    ]);
    const byId = await all({ actor: admin.id }, 50);
    expect(byId).toHaveLength(7);
    const byEmail = await all({ actor: admin.email?.toUpperCase() }, 50);
    expect(byEmail.map((r) => r.id)).toEqual(byId.map((r) => r.id));
    expect(byEmail[0]?.actorEmail).toBe(admin.email);
    const agent = await all({ actorKind: "agent" }, 50);
    expect(agent[0]?.actorEmail).toBeNull();
  });

  it("filters by target and by time range", async () => {
    expect(await all({ targetKind: "fleet", targetId: FLEET }, 50)).toHaveLength(7);
    expect(await all({ targetKind: "instance" }, 50)).toHaveLength(1);
    const range = await all(
      { from: new Date("2026-01-02T00:00:00Z"), to: new Date("2026-01-03T00:00:00Z") },
      50,
    );
    expect(range.map((r) => r.action)).toEqual(Array(7).fill("fleet.create"));
    expect((await list({ targetKind: "vm", targetId: VM, actorKind: "agent" })).rows).toHaveLength(
      1,
    );
  });

  it("never returns secret-looking details", async () => {
    const [row] = (await list({ action: "vm.crd_failed" })).rows;
    expect(row?.details).toEqual({
      error: "start-host said token=[redacted]",
      pin: "[redacted]",
      requestId: "r1",
    });
    expect(JSON.stringify(row)).not.toContain("abcdefghijklmnop");
    expect(JSON.stringify(row)).not.toContain("123456");
  });

  it("is for admins only, and refuses malformed filters with a 400", async () => {
    expect((await api.query("audit.list", {}, { userId: researcher.id })).status).toBe(403);
    expect((await api.query("audit.list", {}, {})).status).toBe(401);
    for (const bad of [
      { action: "vm.%" },
      { action: "x".repeat(101) },
      { actorKind: "robot" },
      { targetKind: "VM; drop" },
      { cursor: 0 },
      { limit: 1000 },
      { surprise: 1 },
    ]) {
      const res = await api.query("audit.list", bad, asAdmin());
      expect(res.status, JSON.stringify(bad)).toBe(400);
    }
  });
});

describe("redactDetails", () => {
  it("blanks secret keys at any depth but keeps ids and plain facts", () => {
    expect(
      redactDetails({
        token: "lla_x",
        enrollmentTokenId: "abc",
        nested: [{ password: "hunter2", size: 3 }],
        key: "AKIAABCDEFGHIJKLMNOP",
      }),
    ).toEqual({
      token: "[redacted]",
      enrollmentTokenId: "abc",
      nested: [{ password: "[redacted]", size: 3 }],
      key: "[redacted]",
    });
  });
});
