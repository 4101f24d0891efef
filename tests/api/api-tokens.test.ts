import { createHash } from "node:crypto";
import { and, eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiTokens, auditEvents, users } from "../../server/db/schema";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeUser } from "../fixtures";
import { apiClient } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let admin: Awaited<ReturnType<typeof makeUser>>;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  admin = await makeUser(t.db, "admin");
});
afterAll(() => t.drop());

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** Creates a token through the API, as the admin's session does on the profile page. */
async function create(scope: "read" | "admin", userId = admin.id, expiresInDays = 30) {
  const res = await api.mutate(
    "profile.apiTokens.create",
    { name: `${scope} token`, scope, expiresInDays },
    { userId },
  );
  expect(res.status, JSON.stringify(res.error)).toBe(200);
  return res.data as { id: string; token: string; scope: string; expiresAt: Date };
}

describe("personal API tokens", () => {
  it("are shown once, stored as a SHA-256 hash only, listed without the secret, and audited", async () => {
    const created = await create("admin");
    expect(created.token).toMatch(/^llk_[0-9a-f]{32}_[A-Za-z0-9_-]{43}$/);
    const [row] = await t.db.select().from(apiTokens).where(eq(apiTokens.id, created.id));
    const secret = created.token.split("_").slice(2).join("_");
    expect(row?.tokenHash).toBe(createHash("sha256").update(secret).digest("hex"));
    expect(JSON.stringify(row)).not.toContain(secret);

    const list = await api.query("profile.apiTokens.list", undefined, { userId: admin.id });
    expect(JSON.stringify(list.data)).not.toContain(secret);
    expect(list.data).toContainEqual(
      expect.objectContaining({
        id: created.id,
        scope: "admin",
        status: "active",
        lastUsedAt: null,
      }),
    );
    const events = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.action, "api_token.create"), eq(auditEvents.targetId, created.id)));
    expect(events).toHaveLength(1);
    expect(events[0]?.actorId).toBe(admin.id);
    expect(JSON.stringify(events[0])).not.toContain(secret);
  });

  it("authenticate as their admin, and the admin's changes are audited as that admin", async () => {
    const { token } = await create("admin");
    const me = await api.query("user.me", undefined, bearer(token));
    expect(me.data).toMatchObject({ id: admin.id, role: "admin" });
    const made = await api.mutate("group.create", { name: "made-by-token" }, bearer(token));
    expect(made.status).toBe(200);
    const [event] = await t.db
      .select()
      .from(auditEvents)
      .where(eq(auditEvents.action, "group.create"));
    expect(event?.actorId).toBe(admin.id);
  });

  it("a read-only token may read admin data but is refused any change, with a clear message", async () => {
    const { token } = await create("read");
    expect((await api.query("fleet.list", undefined, bearer(token))).status).toBe(200);
    const res = await api.mutate("group.create", { name: "refused" }, bearer(token));
    expect(res.status).toBe(403);
    expect(res.error?.message).toMatch(/read-only/);
  });

  it("a revoked token gets 401 at once; an expired one too", async () => {
    const revoked = await create("admin");
    expect((await api.query("user.me", undefined, bearer(revoked.token))).status).toBe(200);
    const rv = await api.mutate(
      "profile.apiTokens.revoke",
      { id: revoked.id },
      { userId: admin.id },
    );
    expect(rv.status).toBe(200);
    const after = await api.query("user.me", undefined, bearer(revoked.token));
    expect(after.status).toBe(401);
    expect(after.error?.message).toMatch(/revoked/);
    const list = await api.query("profile.apiTokens.list", undefined, { userId: admin.id });
    expect(list.data).toContainEqual(
      expect.objectContaining({ id: revoked.id, status: "revoked" }),
    );
    const [event] = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.action, "api_token.revoke"), eq(auditEvents.targetId, revoked.id)));
    expect(event?.actorId).toBe(admin.id);

    const expired = await create("admin", admin.id, 1);
    await t.db
      .update(apiTokens)
      .set({ expiresAt: sql`now() - interval '1 second'` })
      .where(eq(apiTokens.id, expired.id));
    const res = await api.query("user.me", undefined, bearer(expired.token));
    expect(res.status).toBe(401);
    expect(res.error?.message).toMatch(/expired/);
  });

  it("a token whose secret is wrong gets 401, like an unknown one", async () => {
    const { token } = await create("admin");
    const forged = `${token.slice(0, -4)}AAAA`;
    expect((await api.query("user.me", undefined, bearer(forged))).status).toBe(401);
    expect((await api.query("user.me", undefined, bearer("llk_nonsense"))).status).toBe(401);
  });

  it("stops working the moment its owner is demoted, and works again when promoted back", async () => {
    const other = await makeUser(t.db, "admin");
    const { token } = await create("admin", other.id);
    expect((await api.query("fleet.list", undefined, bearer(token))).status).toBe(200);
    await t.db.update(users).set({ role: "researcher" }).where(eq(users.id, other.id));
    const res = await api.query("user.me", undefined, bearer(token));
    expect(res.status).toBe(401);
    expect(res.error?.message).toMatch(/no longer an admin/);
    await t.db.update(users).set({ role: "admin" }).where(eq(users.id, other.id));
    expect((await api.query("fleet.list", undefined, bearer(token))).status).toBe(200);
  });

  it("records its last use at most once a minute", async () => {
    const { id, token } = await create("read");
    const lastUsed = async () =>
      (await t.db.select().from(apiTokens).where(eq(apiTokens.id, id)))[0]?.lastUsedAt ?? null;
    expect(await lastUsed()).toBeNull();
    await api.query("fleet.list", undefined, bearer(token));
    const first = await lastUsed();
    expect(first).toBeInstanceOf(Date);
    // 30 s ago: inside the minute, so the next call leaves it alone.
    await t.db
      .update(apiTokens)
      .set({ lastUsedAt: sql`now() - interval '30 seconds'` })
      .where(eq(apiTokens.id, id));
    const thirtyAgo = await lastUsed();
    await api.query("fleet.list", undefined, bearer(token));
    expect(await lastUsed()).toEqual(thirtyAgo);
    await t.db
      .update(apiTokens)
      .set({ lastUsedAt: sql`now() - interval '2 minutes'` })
      .where(eq(apiTokens.id, id));
    await api.query("fleet.list", undefined, bearer(token));
    expect((await lastUsed())?.getTime()).toBeGreaterThan(Date.now() - 10_000);
  });

  it("wins over a session sent along: the token's owner and rights count, not the session's", async () => {
    const researcher = await makeUser(t.db, "researcher");
    const { token } = await create("admin");
    const me = await api.query("user.me", undefined, { userId: researcher.id, ...bearer(token) });
    expect(me.data).toMatchObject({ id: admin.id });
    const revoked = await create("admin");
    await api.mutate("profile.apiTokens.revoke", { id: revoked.id }, { userId: admin.id });
    // A valid admin session does not rescue a revoked token.
    const res = await api.query("fleet.list", undefined, {
      userId: admin.id,
      ...bearer(revoked.token),
    });
    expect(res.status).toBe(401);
  });

  it("cannot create, list or revoke tokens (only a signed-in admin can)", async () => {
    const { id, token } = await create("admin");
    const made = await api.mutate(
      "profile.apiTokens.create",
      { name: "successor", scope: "admin" },
      bearer(token),
    );
    expect(made.status).toBe(403);
    expect(made.error?.message).toMatch(/cannot manage API tokens/);
    expect((await api.query("profile.apiTokens.list", undefined, bearer(token))).status).toBe(403);
    expect((await api.mutate("profile.apiTokens.revoke", { id }, bearer(token))).status).toBe(403);
  });

  it("an admin cannot revoke another admin's token, nor create one for a year and a day", async () => {
    const other = await makeUser(t.db, "admin");
    const theirs = await create("admin", other.id);
    const res = await api.mutate(
      "profile.apiTokens.revoke",
      { id: theirs.id },
      { userId: admin.id },
    );
    expect(res.status).toBe(404);
    expect((await api.query("user.me", undefined, bearer(theirs.token))).status).toBe(200);
    const tooLong = await api.mutate(
      "profile.apiTokens.create",
      { name: "forever", scope: "admin", expiresInDays: 366 },
      { userId: admin.id },
    );
    expect(tooLong.status).toBe(400);
  });

  it("researchers cannot create tokens", async () => {
    const researcher = await makeUser(t.db, "researcher");
    const res = await api.mutate(
      "profile.apiTokens.create",
      { name: "mine", scope: "read" },
      { userId: researcher.id },
    );
    expect(res.status).toBe(403);
  });
});
