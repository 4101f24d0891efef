import { sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";

/*
 * Webhook events, apart from the rest of webhooks.ts so the domain modules that emit them
 * (vm-state, operations, allocation) import nothing else of it (no import cycle).
 */

import type { WebhookEventType } from "./webhook-event-types";

export {
  WEBHOOK_EVENT_TYPES,
  WEBHOOK_EVENTS,
  type WebhookEventType,
} from "./webhook-event-types";

export type WebhookEvent = {
  type: WebhookEventType;
  /** One line for people (Slack's text, the admin's history). */
  summary: string;
  /** Facts for machines: ids and names, never secrets. */
  data: Record<string, unknown>;
  /**
   * Sent at most once a day per webhook for the same key (a researcher retrying a refused claim
   * must not flood a channel).
   */
  onceADayKey?: string;
};

/**
 * Records `event` for every enabled webhook subscribed to it, in the caller's transaction: a
 * change rolled back sends nothing, and a committed one is never lost (the worker sends what is
 * pending, told at commit by NOTIFY and by its periodic sweep).
 */
export async function emitEvent(db: DbOrTx, event: WebhookEvent): Promise<string[]> {
  const payload = {
    event: event.type,
    summary: event.summary,
    occurredAt: new Date().toISOString(),
    data: event.data,
    ...(event.onceADayKey ? { key: event.onceADayKey } : {}),
  };
  const once = event.onceADayKey
    ? sql`AND NOT EXISTS (
        SELECT 1 FROM webhook_deliveries d
        WHERE d.webhook_id = w.id AND d.event = ${event.type}
          AND d.payload->>'key' = ${event.onceADayKey}
          AND d.created_at > now() - interval '1 day')`
    : sql``;
  const rows = await db.execute<{ id: string }>(sql`
    INSERT INTO webhook_deliveries (webhook_id, event, payload)
    SELECT w.id, ${event.type}, ${JSON.stringify(payload)}::jsonb FROM webhooks w
    WHERE w.enabled AND ${event.type} = ANY(w.events) ${once}
    RETURNING id`);
  if (rows.length > 0) await db.execute(sql`SELECT pg_notify('lablink_webhook', '')`);
  return rows.map((r) => r.id);
}
