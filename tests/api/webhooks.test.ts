import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, type users, webhookDeliveries } from "../../server/db/schema";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeUser } from "../fixtures";
import { apiClient } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let admin: typeof users.$inferSelect;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  admin = await makeUser(t.db, "admin");
});
afterAll(() => t?.drop());

const as = {
  get userId() {
    return admin.id;
  },
};

describe("webhook procedures", () => {
  it("creates a webhook, shows its secret once, and never again in list or audit", async () => {
    const created = await api.mutate(
      "webhook.create",
      { url: "https://hooks.example.edu/a", events: ["vm.failed", "pool.empty"], format: "slack" },
      as,
    );
    expect(created.status).toBe(200);
    const { webhook, secret } = created.data as { webhook: { id: string }; secret: string };
    expect(secret).toMatch(/^whsec_/);

    const list = await api.query("webhook.list", undefined, as);
    expect(list.status).toBe(200);
    expect(JSON.stringify(list.data)).not.toContain(secret);
    expect(list.data).toEqual([
      expect.objectContaining({
        id: webhook.id,
        url: "https://hooks.example.edu/a",
        events: ["vm.failed", "pool.empty"],
        format: "slack",
        enabled: true,
        createdBy: admin.id,
      }),
    ]);
    expect(list.data as object[]).not.toContainEqual(
      expect.objectContaining({ secretSealed: expect.anything() }),
    );
    const audits = await t.db
      .select()
      .from(auditEvents)
      .where(eq(auditEvents.targetId, webhook.id));
    expect(audits.map((a) => [a.action, a.details])).toEqual([
      [
        "webhook.create",
        { host: "hooks.example.edu", events: ["vm.failed", "pool.empty"], format: "slack" },
      ],
    ]);
    expect(JSON.stringify(audits)).not.toContain(secret);
  });

  it("refuses plain http to another host, bad events and short secrets with 400s", async () => {
    const bad = async (input: Record<string, unknown>) =>
      (
        await api.mutate(
          "webhook.create",
          { events: ["vm.failed"], url: "https://x.example.edu", ...input },
          as,
        )
      ).status;
    expect(await bad({ url: "http://hooks.example.edu/a" })).toBe(400);
    expect(await bad({ url: "not a url" })).toBe(400);
    expect(await bad({ url: "https://user:pw@hooks.example.edu/" })).toBe(400);
    expect(await bad({ events: [] })).toBe(400);
    expect(await bad({ events: ["vm.exploded"] })).toBe(400);
    expect(await bad({ secret: "short" })).toBe(400);
    // Allowed in tests (and development): a receiver on this machine.
    expect(await bad({ url: "http://127.0.0.1:9/hook" })).toBe(200);
  });

  it("updates, queues a test delivery shown in the history, and deletes", async () => {
    const created = await api.mutate(
      "webhook.create",
      { url: "https://hooks.example.edu/b", events: ["operation.failed"] },
      as,
    );
    const { id } = (created.data as { webhook: { id: string } }).webhook;
    const updated = await api.mutate(
      "webhook.update",
      { id, enabled: false, events: ["fleet.at_size"] },
      as,
    );
    expect(updated.data).toMatchObject({ id, enabled: false, events: ["fleet.at_size"] });

    expect((await api.mutate("webhook.test", { id }, as)).status).toBe(200);
    const history = await api.query("webhook.deliveries", { webhookId: id, limit: 10 }, as);
    expect(history.data).toEqual([
      expect.objectContaining({ event: "webhook.test", status: "pending", attempts: 0 }),
    ]);

    expect((await api.mutate("webhook.delete", { id }, as)).status).toBe(200);
    expect((await api.mutate("webhook.delete", { id }, as)).status).toBe(404);
    expect((await api.mutate("webhook.test", { id }, as)).status).toBe(404);
    // Deliveries go with their webhook.
    expect(await t.db.$count(webhookDeliveries, eq(webhookDeliveries.webhookId, id))).toBe(0);
  });
});
