import { createHmac, randomBytes } from "node:crypto";
import { and, desc, eq, sql } from "drizzle-orm";
import { seal, unseal } from "../auth/secret-box";
import type { DbOrTx } from "../db/client";
import { type Webhook, type WebhookFormat, webhookDeliveries, webhooks } from "../db/schema";
import { env } from "../env";
import { audit } from "./audit";
import { DomainError } from "./errors";
import { redact } from "./redact";
import type { Actor } from "./vm-state";
import type { WebhookEventType } from "./webhook-events";

export {
  emitEvent,
  WEBHOOK_EVENT_TYPES,
  WEBHOOK_EVENTS,
  type WebhookEvent,
  type WebhookEventType,
} from "./webhook-events";

/** pg-boss retries a failed POST this many times in all (the first try included). */
export const WEBHOOK_MAX_ATTEMPTS = 6;
/** A receiver that has not answered in this long counts as a failed attempt. */
const POST_TIMEOUT_MS = 10_000;

/** What the admin page and API show of a webhook: never its secret. */
export type PublicWebhook = Omit<Webhook, "secretSealed">;
const publicColumns = {
  id: webhooks.id,
  url: webhooks.url,
  events: webhooks.events,
  format: webhooks.format,
  enabled: webhooks.enabled,
  createdBy: webhooks.createdBy,
  createdAt: webhooks.createdAt,
};

/**
 * HTTPS only: deliveries carry fleet and user facts. Plain http to this machine is allowed for
 * tests and local development (NODE_ENV=test or LABLINK_DEV_LOGIN), never in production.
 */
export function checkWebhookUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new DomainError("INVALID_INPUT", "The webhook URL is not a valid URL.", {
      field: "url",
    });
  }
  if (url.username || url.password)
    throw new DomainError("INVALID_INPUT", "Put no user name or password in the webhook URL.", {
      field: "url",
    });
  if (url.protocol === "https:") return url.toString();
  const e = env();
  const local = ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname);
  if (url.protocol === "http:" && local && (e.NODE_ENV === "test" || e.LABLINK_DEV_LOGIN))
    return url.toString();
  throw new DomainError("INVALID_INPUT", "The webhook URL must start with https://.", {
    field: "url",
  });
}

/**
 * What the audit log keeps of a URL: its host. A Slack incoming-webhook URL is itself a
 * credential (its path), and the audit log is read more widely than the webhook list.
 */
function hostOf(url: string): string {
  return new URL(url).host;
}

export async function listWebhooks(db: DbOrTx): Promise<PublicWebhook[]> {
  return db.select(publicColumns).from(webhooks).orderBy(webhooks.createdAt);
}

/** Creates a webhook; the reply is the only time its signing secret is shown. */
export async function createWebhook(
  db: DbOrTx,
  req: {
    url: string;
    events: WebhookEventType[];
    format: WebhookFormat;
    secret?: string;
    userId: string | null;
    actor: Actor;
  },
): Promise<{ webhook: PublicWebhook; secret: string }> {
  const url = checkWebhookUrl(req.url);
  const secret = req.secret ?? `whsec_${randomBytes(24).toString("base64url")}`;
  const [row] = await db
    .insert(webhooks)
    .values({
      url,
      secretSealed: seal(secret),
      events: [...new Set(req.events)],
      format: req.format,
      createdBy: req.userId,
    })
    .returning(publicColumns);
  if (!row) throw new Error("insert returned nothing");
  await audit(
    db,
    req.actor,
    "webhook.create",
    { kind: "webhook", id: row.id },
    { host: hostOf(url), events: row.events, format: row.format },
  );
  return { webhook: row, secret };
}

export async function updateWebhook(
  db: DbOrTx,
  req: {
    id: string;
    url?: string;
    events?: WebhookEventType[];
    format?: WebhookFormat;
    enabled?: boolean;
    actor: Actor;
  },
): Promise<PublicWebhook> {
  const patch = {
    ...(req.url !== undefined ? { url: checkWebhookUrl(req.url) } : {}),
    ...(req.events !== undefined ? { events: [...new Set(req.events)] } : {}),
    ...(req.format !== undefined ? { format: req.format } : {}),
    ...(req.enabled !== undefined ? { enabled: req.enabled } : {}),
  };
  const [row] =
    Object.keys(patch).length > 0
      ? await db.update(webhooks).set(patch).where(eq(webhooks.id, req.id)).returning(publicColumns)
      : await db.select(publicColumns).from(webhooks).where(eq(webhooks.id, req.id));
  if (!row) throw new DomainError("NOT_FOUND", "No such webhook.");
  const { url: newUrl, ...rest } = patch;
  await audit(
    db,
    req.actor,
    "webhook.update",
    { kind: "webhook", id: row.id },
    newUrl ? { ...rest, host: hostOf(newUrl) } : rest,
  );
  return row;
}

export async function deleteWebhook(db: DbOrTx, req: { id: string; actor: Actor }) {
  const [row] = await db
    .delete(webhooks)
    .where(eq(webhooks.id, req.id))
    .returning({ id: webhooks.id, url: webhooks.url });
  if (!row) throw new DomainError("NOT_FOUND", "No such webhook.");
  await audit(
    db,
    req.actor,
    "webhook.delete",
    { kind: "webhook", id: row.id },
    { host: hostOf(row.url) },
  );
  return { id: row.id };
}

/** Queues a `webhook.test` delivery to this webhook alone (whatever events it chose). */
export async function sendTestEvent(db: DbOrTx, req: { id: string; actor: Actor }) {
  const [hook] = await db.select({ id: webhooks.id }).from(webhooks).where(eq(webhooks.id, req.id));
  if (!hook) throw new DomainError("NOT_FOUND", "No such webhook.");
  const payload = {
    event: "webhook.test",
    summary: "LabLink test event: this webhook works.",
    occurredAt: new Date().toISOString(),
    data: {},
  };
  const [row] = await db
    .insert(webhookDeliveries)
    .values({ webhookId: hook.id, event: "webhook.test", payload })
    .returning({ id: webhookDeliveries.id });
  await db.execute(sql`SELECT pg_notify('lablink_webhook', '')`);
  await audit(db, req.actor, "webhook.test", { kind: "webhook", id: hook.id });
  return { deliveryId: row?.id ?? null };
}

/** A webhook's latest deliveries, newest first (the payload is left out: it can be large). */
export async function listDeliveries(db: DbOrTx, req: { webhookId: string; limit: number }) {
  return db
    .select({
      id: webhookDeliveries.id,
      event: webhookDeliveries.event,
      status: webhookDeliveries.status,
      attempts: webhookDeliveries.attempts,
      responseCode: webhookDeliveries.responseCode,
      error: webhookDeliveries.error,
      createdAt: webhookDeliveries.createdAt,
      deliveredAt: webhookDeliveries.deliveredAt,
    })
    .from(webhookDeliveries)
    .where(eq(webhookDeliveries.webhookId, req.webhookId))
    .orderBy(desc(webhookDeliveries.createdAt))
    .limit(req.limit);
}

/**
 * Pending deliveries no job was queued for yet, or whose job vanished (still pending an hour
 * after it was queued, longer than every retry takes); marks them queued (the caller queues them).
 */
export async function takeUnqueuedDeliveries(db: DbOrTx, limit = 100): Promise<string[]> {
  const rows = await db.execute<{ id: string }>(sql`
    UPDATE webhook_deliveries SET enqueued_at = now()
    WHERE id IN (
      SELECT id FROM webhook_deliveries
      WHERE status = 'pending'
        AND (enqueued_at IS NULL OR enqueued_at < now() - interval '1 hour')
      ORDER BY created_at LIMIT ${limit}
      FOR UPDATE SKIP LOCKED)
    RETURNING id`);
  return rows.map((r) => r.id);
}

/** A delivery whose job could not be queued goes back to the sweep. */
export async function unmarkQueued(db: DbOrTx, deliveryId: string): Promise<void> {
  await db
    .update(webhookDeliveries)
    .set({ enqueuedAt: null })
    .where(eq(webhookDeliveries.id, deliveryId));
}

/** `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, as receivers verify it. */
export function signatureHeader(secret: string, body: string, unixSeconds: number): string {
  const mac = createHmac("sha256", secret).update(`${unixSeconds}.${body}`).digest("hex");
  return `t=${unixSeconds},v1=${mac}`;
}

/** The body a webhook of this format receives. */
export function deliveryBody(format: WebhookFormat, payload: Record<string, unknown>): string {
  if (format === "slack") {
    const summary = String(payload.summary ?? payload.event);
    return JSON.stringify({
      text: `LabLink: ${summary}`,
      blocks: [{ type: "section", text: { type: "mrkdwn", text: `*LabLink* ${summary}` } }],
    });
  }
  return JSON.stringify(payload);
}

export type DeliveryOutcome = "delivered" | "retrying" | "failed" | "skipped";

/**
 * Makes one attempt at a pending delivery. A 2xx marks it delivered; anything else is recorded
 * and thrown (so the job is retried with backoff) until the last attempt, which marks it failed.
 */
export async function attemptDelivery(
  db: DbOrTx,
  deliveryId: string,
  opts: { maxAttempts?: number; timeoutMs?: number } = {},
): Promise<DeliveryOutcome> {
  const maxAttempts = opts.maxAttempts ?? WEBHOOK_MAX_ATTEMPTS;
  const [taken] = await db
    .update(webhookDeliveries)
    .set({ attempts: sql`${webhookDeliveries.attempts} + 1` })
    .where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.status, "pending")))
    .returning();
  if (!taken) return "skipped";
  const [hook] = await db.select().from(webhooks).where(eq(webhooks.id, taken.webhookId));
  const finish = async (
    status: "delivered" | "failed" | "pending",
    fields: { responseCode?: number | null; error?: string | null },
  ) => {
    await db
      .update(webhookDeliveries)
      .set({
        status,
        responseCode: fields.responseCode ?? null,
        error: fields.error ?? null,
        ...(status === "delivered" ? { deliveredAt: sql`now()` } : {}),
      })
      .where(eq(webhookDeliveries.id, deliveryId));
  };
  const secret = hook ? unseal(hook.secretSealed) : null;
  if (!hook?.enabled || secret === null) {
    await finish("failed", {
      error: !hook
        ? "the webhook was deleted"
        : !hook.enabled
          ? "the webhook is disabled"
          : "the signing secret cannot be read (was AUTH_SECRET changed?)",
    });
    return "failed";
  }
  const body = deliveryBody(hook.format, taken.payload);
  let code: number | null = null;
  let error: string;
  try {
    const res = await fetch(hook.url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "user-agent": "LabLink-Webhooks/1",
        "x-lablink-event": taken.event,
        "x-lablink-delivery": taken.id,
        "x-lablink-signature": signatureHeader(secret, body, Math.floor(Date.now() / 1000)),
      },
      body,
      redirect: "manual",
      signal: AbortSignal.timeout(opts.timeoutMs ?? POST_TIMEOUT_MS),
    });
    code = res.status;
    await res.body?.cancel().catch(() => undefined);
    if (res.ok) {
      await finish("delivered", { responseCode: code });
      return "delivered";
    }
    error = `the receiver answered ${code}`;
  } catch (err) {
    error = redact(err instanceof Error ? err.message : String(err)).slice(0, 500);
  }
  if (taken.attempts >= maxAttempts) {
    await finish("failed", {
      responseCode: code,
      error: `${error} (gave up after ${taken.attempts} attempts)`,
    });
    return "failed";
  }
  await finish("pending", { responseCode: code, error });
  throw new WebhookAttemptFailed(error);
}

/** Thrown for a failed attempt that will be retried. */
export class WebhookAttemptFailed extends Error {
  name = "WebhookAttemptFailed";
}

/**
 * Deletes finished deliveries (delivered or failed) older than `retentionDays`, the periodic
 * `webhook-deliveries.prune` job: the history page shows recent ones, and the table must not grow
 * for ever. Pending deliveries are kept whatever their age (they are still being tried).
 */
export async function pruneWebhookDeliveries(db: DbOrTx, retentionDays: number): Promise<number> {
  const deleted = await db.execute<{ n: number }>(sql`
    WITH gone AS (
      DELETE FROM webhook_deliveries
      WHERE status <> 'pending'
        AND coalesce(delivered_at, created_at) < now() - make_interval(days => ${retentionDays}::int)
      RETURNING 1)
    SELECT count(*)::int AS n FROM gone`);
  return deleted[0]?.n ?? 0;
}
