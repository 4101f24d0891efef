import { afterAll, beforeAll, expect, it } from "vitest";
import { auditEvents, groupMembers, groups } from "../../server/db/schema";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeUser } from "../fixtures";
import { apiClient } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
});
afterAll(() => t.drop());

type Row = { id: string; groups: string[]; groupIds: string[]; lastSignInAt: Date | null };

it("user.list shows each user's group ids and last sign-in (from the audited sign-ins)", async () => {
  const admin = await makeUser(t.db, "admin", "zz-admin");
  const ada = await makeUser(t.db, "researcher", "ada");
  const never = await makeUser(t.db, "researcher", "never");
  const [g] = await t.db.insert(groups).values({ name: "course" }).returning();
  if (!g) throw new Error("group");
  await t.db.insert(groupMembers).values({ groupId: g.id, userId: ada.id });
  const last = new Date("2026-03-01T12:00:00Z");
  await t.db.insert(auditEvents).values([
    {
      actorKind: "user",
      actorId: ada.id,
      action: "auth.sign_in",
      targetKind: "user",
      targetId: ada.id,
      at: new Date("2026-02-01T00:00:00Z"),
    },
    {
      actorKind: "user",
      actorId: ada.id,
      action: "auth.sign_in",
      targetKind: "user",
      targetId: ada.id,
      at: last,
    },
    // Not a sign-in: does not count.
    {
      actorKind: "user",
      actorId: admin.id,
      action: "user.promote",
      targetKind: "user",
      targetId: never.id,
      at: new Date("2026-04-01T00:00:00Z"),
    },
  ]);
  const res = await api.query("user.list", { limit: 10 }, { userId: admin.id });
  expect(res.status).toBe(200);
  const rows = (res.data as { rows: Row[] }).rows;
  const byId = new Map(rows.map((r) => [r.id, r]));
  expect(byId.get(ada.id)).toMatchObject({ groups: ["course"], groupIds: [g.id] });
  expect(byId.get(ada.id)?.lastSignInAt).toEqual(last);
  expect(byId.get(never.id)).toMatchObject({ groupIds: [], lastSignInAt: null });
});
