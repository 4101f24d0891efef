import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { eq, sql } from "drizzle-orm";
import pino from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { webhookDeliveries, webhooks } from "../../server/db/schema";
import { systemActor } from "../../server/domain/vm-state";
import {
  createWebhook,
  emitEvent,
  listDeliveries,
  listWebhooks,
  type WebhookEventType,
} from "../../server/domain/webhooks";
import { allJobs } from "../../server/jobs/definitions";
import { startDispatcher } from "../../server/jobs/dispatch";
import { JobRunner } from "../../server/jobs/runner";
import { createTestDatabase, type TestDatabase } from "../db";
import { runJob } from "../jobs";

type Received = { path: string; headers: IncomingHttpHeaders; body: string };

let t: TestDatabase;
let runner: JobRunner;
let receiver: Server;
let base: string;
const received: Received[] = [];
/** Status codes the receiver answers with, one per request; 200 once they run out. */
const answers: number[] = [];
const logLines: string[] = [];

beforeAll(async () => {
  t = await createTestDatabase();
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      received.push({
        path: req.url ?? "",
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      });
      res.writeHead(answers.shift() ?? 200).end("ok");
    });
  });
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  const log = pino({ level: "trace" }, { write: (s: string) => void logLines.push(s) });
  runner = new JobRunner(t.url, t.db, log);
  await runner.start(
    allJobs({
      staleSeconds: 60,
      drivers: {},
      webhooks: { retryDelaySeconds: 1, maxAttempts: 3, timeoutMs: 3_000 },
    }),
  );
});
afterAll(async () => {
  await runner?.stop();
  await new Promise((r) => receiver?.close(r));
  await t?.drop();
});
beforeEach(async () => {
  // Each test's webhook is the only one subscribed.
  await t.db.update(webhooks).set({ enabled: false });
  received.length = 0;
  answers.length = 0;
});

let n = 0;
async function hook(events: WebhookEventType[], format: "lablink" | "slack" = "lablink") {
  const path = `/hook-${++n}`;
  const { webhook, secret } = await createWebhook(t.db, {
    url: `${base}${path}`,
    events,
    format,
    userId: null,
    actor: systemActor,
  });
  return { webhook, secret, path };
}

async function emit(type: WebhookEventType, data: Record<string, unknown> = { fleet: "gpu-a" }) {
  const ids = await t.db.transaction((tx) =>
    emitEvent(tx, { type, summary: `${type} happened to gpu-a`, data }),
  );
  expect(ids).toHaveLength(1);
  return ids[0] as string;
}

async function delivery(id: string) {
  const [row] = await t.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, id));
  return row;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) {
      const jobs = await t.db.execute(
        sql`SELECT name, state, retry_count, retry_limit, retry_delay, start_after, now() AS now FROM pgboss.job WHERE name = 'webhook.deliver'`,
      );
      throw new Error(`timed out waiting for ${what}\n${JSON.stringify(jobs)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** What a receiver does with the documented header (docs/operations.md#webhooks). */
function verify(secret: string, header: string, body: string, toleranceS = 300): boolean {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (!m?.[1] || !m[2]) return false;
  if (Math.abs(Date.now() / 1000 - Number(m[1])) > toleranceS) return false;
  const expected = createHmac("sha256", secret).update(`${m[1]}.${body}`).digest();
  return timingSafeEqual(expected, Buffer.from(m[2], "hex"));
}

describe("webhook deliveries to a real HTTP receiver", () => {
  it("POSTs the event as JSON, signed with the webhook's secret, and records the delivery", async () => {
    const { secret, path, webhook } = await hook(["vm.failed"]);
    const id = await emit("vm.failed", { vmId: "vm-1", fleet: "gpu-a" });
    expect((await runJob(runner, "webhook.deliver", { deliveryId: id })).state).toBe("completed");

    expect(received).toHaveLength(1);
    const [req] = received;
    if (!req) throw new Error("nothing received");
    expect(req.path).toBe(path);
    expect(req.headers["content-type"]).toBe("application/json");
    expect(req.headers["x-lablink-event"]).toBe("vm.failed");
    expect(req.headers["x-lablink-delivery"]).toBe(id);
    const signature = String(req.headers["x-lablink-signature"]);
    expect(verify(secret, signature, req.body)).toBe(true);
    expect(verify("another-secret", signature, req.body)).toBe(false);
    expect(verify(secret, signature, `${req.body} `)).toBe(false);
    expect(JSON.parse(req.body)).toMatchObject({
      event: "vm.failed",
      summary: "vm.failed happened to gpu-a",
      data: { vmId: "vm-1", fleet: "gpu-a" },
    });

    expect(await delivery(id)).toMatchObject({
      status: "delivered",
      attempts: 1,
      responseCode: 200,
      error: null,
    });
    expect((await delivery(id))?.deliveredAt).toBeInstanceOf(Date);
    const history = await listDeliveries(t.db, { webhookId: webhook.id, limit: 10 });
    expect(history.map((d) => [d.id, d.status])).toEqual([[id, "delivered"]]);
  });

  it("retries after a 500, with backoff, and delivers on the next attempt", async () => {
    await hook(["operation.failed"]);
    answers.push(500);
    const id = await emit("operation.failed");
    await runner.send("webhook.deliver", { deliveryId: id });
    const row = await waitFor("delivered", async () => {
      const d = await delivery(id);
      return d?.status === "delivered" && d;
    });
    expect(row).toMatchObject({ attempts: 2, responseCode: 200, error: null });
    expect(received).toHaveLength(2);
    // The same delivery both times, each signed afresh.
    expect(received.map((r) => r.headers["x-lablink-delivery"])).toEqual([id, id]);
  });

  it("records a final failure after the last attempt", async () => {
    await hook(["pool.empty"]);
    answers.push(503, 503, 503, 503);
    const id = await emit("pool.empty");
    await runner.send("webhook.deliver", { deliveryId: id });
    const row = await waitFor("failed", async () => {
      const d = await delivery(id);
      return d?.status === "failed" && d;
    });
    expect(row).toMatchObject({ attempts: 3, responseCode: 503 });
    expect(row.error).toMatch(/answered 503 \(gave up after 3 attempts\)/);
    expect(received).toHaveLength(3);
  });

  it("sends Slack-compatible JSON to a Slack-format webhook", async () => {
    const { path } = await hook(["fleet.at_size"], "slack");
    const id = await emit("fleet.at_size");
    await runJob(runner, "webhook.deliver", { deliveryId: id });
    expect(received.map((r) => r.path)).toEqual([path]);
    const body = JSON.parse(received[0]?.body ?? "{}");
    expect(body.text).toBe("LabLink: fleet.at_size happened to gpu-a");
    expect(body.blocks?.[0]?.type).toBe("section");
  });

  it("sends nothing for an event whose transaction rolled back", async () => {
    await hook(["quota.reached"]);
    const before = await t.db.$count(webhookDeliveries);
    await expect(
      t.db.transaction(async (tx) => {
        await emitEvent(tx, { type: "quota.reached", summary: "quota", data: {} });
        throw new Error("the change failed");
      }),
    ).rejects.toThrow("the change failed");
    expect(await t.db.$count(webhookDeliveries)).toBe(before);
  });

  it("reaches the receiver through the worker's dispatcher, from the commit alone", async () => {
    const { path } = await hook(["recovery.gave_up"]);
    const dispatcher = await startDispatcher({
      db: t.db,
      sql: t.sql,
      runner,
      log: pino({ level: "silent" }),
      sweepMs: 60_000,
    });
    try {
      const id = await emit("recovery.gave_up");
      await waitFor("delivered", async () => (await delivery(id))?.status === "delivered");
      expect(received.map((r) => r.path)).toEqual([path]);
    } finally {
      await dispatcher.stop();
    }
  });

  it("queues again a delivery whose job vanished (still pending an hour after it was queued)", async () => {
    const { path } = await hook(["vm.failed"]);
    const id = await emit("vm.failed");
    const recent = await emit("vm.failed");
    await t.db
      .update(webhookDeliveries)
      .set({ enqueuedAt: new Date(Date.now() - 2 * 3_600_000) })
      .where(eq(webhookDeliveries.id, id));
    await t.db
      .update(webhookDeliveries)
      .set({ enqueuedAt: new Date() })
      .where(eq(webhookDeliveries.id, recent));
    const dispatcher = await startDispatcher({
      db: t.db,
      sql: t.sql,
      runner,
      log: pino({ level: "silent" }),
      sweepMs: 60_000,
    });
    try {
      await waitFor("delivered", async () => (await delivery(id))?.status === "delivered");
      expect(received.map((r) => r.path)).toEqual([path]);
      // One queued a moment ago is its job's to send.
      expect((await delivery(recent))?.status).toBe("pending");
    } finally {
      await dispatcher.stop();
    }
  });

  it("never shows a webhook's secret in list output, the table or the logs", async () => {
    const { secret } = await hook(["vm.failed"]);
    answers.push(500, 500, 500);
    const id = await emit("vm.failed");
    await runner.send("webhook.deliver", { deliveryId: id });
    await waitFor("failed", async () => (await delivery(id))?.status === "failed");
    const list = JSON.stringify(await listWebhooks(t.db));
    expect(list).not.toContain(secret);
    expect(list).not.toContain("secret");
    const [stored] = await t.db.execute<{ s: string }>(
      sql`SELECT string_agg(secret_sealed, ',') AS s FROM webhooks`,
    );
    expect(stored?.s).not.toContain(secret);
    expect(logLines.length).toBeGreaterThan(0);
    expect(logLines.join("\n")).not.toContain(secret);
  });
});

describe("delivery history", () => {
  it("the hourly prune deletes finished deliveries past the history period and keeps pending ones", async () => {
    const { webhook: hook } = await createWebhook(t.db, {
      url: `${base}/prune`,
      events: ["vm.failed"],
      format: "lablink",
      userId: null,
      actor: systemActor,
    });
    const old = sql`now() - interval '31 days'`;
    const rows = await t.db
      .insert(webhookDeliveries)
      .values([
        { webhookId: hook.id, event: "vm.failed", payload: { n: 1 }, status: "delivered" },
        { webhookId: hook.id, event: "vm.failed", payload: { n: 2 }, status: "failed" },
        { webhookId: hook.id, event: "vm.failed", payload: { n: 3 }, status: "pending" },
        { webhookId: hook.id, event: "vm.failed", payload: { n: 4 }, status: "delivered" },
      ])
      .returning({ id: webhookDeliveries.id });
    const [oldDelivered, oldFailed, oldPending, recent] = rows.map((r) => r.id);
    await t.db
      .update(webhookDeliveries)
      .set({ createdAt: old, deliveredAt: old })
      .where(sql`${webhookDeliveries.id} IN (${oldDelivered}, ${oldFailed}, ${oldPending})`);
    const job = await runJob(runner, "webhook-deliveries.prune", {});
    expect(job.state).toBe("completed");
    const left = await t.db
      .select({ id: webhookDeliveries.id })
      .from(webhookDeliveries)
      .where(eq(webhookDeliveries.webhookId, hook.id));
    expect(left.map((r) => r.id).sort()).toEqual([oldPending, recent].sort());
  });
});
