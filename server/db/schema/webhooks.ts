import { sql } from "drizzle-orm";
import { boolean, index, integer, jsonb, pgEnum, pgTable, text, uuid } from "drizzle-orm/pg-core";
import { createdAt, id, ts } from "./columns";
import { users } from "./users";

/** `lablink`: the event as JSON, signed; `slack`: `{ "text": ... }` for a Slack incoming webhook. */
export const webhookFormat = pgEnum("webhook_format", ["lablink", "slack"]);
export type WebhookFormat = (typeof webhookFormat.enumValues)[number];

export const webhookDeliveryStatus = pgEnum("webhook_delivery_status", [
  "pending",
  "delivered",
  "failed",
]);

/**
 * HTTPS endpoints admins subscribe to LabLink events. The signing secret is sealed with
 * secret-box (it must be read back to sign each delivery, so it cannot be hashed); it is shown
 * once, when the webhook is created.
 */
export const webhooks = pgTable("webhooks", {
  id: id(),
  url: text("url").notNull(),
  secretSealed: text("secret_sealed").notNull(),
  /** Event names (server/domain/webhooks.ts WEBHOOK_EVENTS). */
  events: text("events").array().notNull(),
  format: webhookFormat("format").notNull().default("lablink"),
  enabled: boolean("enabled").notNull().default(true),
  createdBy: uuid("created_by").references(() => users.id, { onDelete: "set null" }),
  createdAt: createdAt(),
});

/**
 * One event to one webhook. Written in the transaction of the change it reports (so a rolled
 * back change sends nothing), then sent by the worker's `webhook.deliver` job, retried with
 * backoff; `attempts` counts the POSTs made.
 */
export const webhookDeliveries = pgTable(
  "webhook_deliveries",
  {
    id: id(),
    webhookId: uuid("webhook_id")
      .notNull()
      .references(() => webhooks.id, { onDelete: "cascade" }),
    event: text("event").notNull(),
    payload: jsonb("payload").$type<Record<string, unknown>>().notNull(),
    status: webhookDeliveryStatus("status").notNull().default("pending"),
    attempts: integer("attempts").notNull().default(0),
    responseCode: integer("response_code"),
    error: text("error"),
    /** When the worker queued its job; the worker's sweep queues deliveries still without one. */
    enqueuedAt: ts("enqueued_at"),
    createdAt: createdAt(),
    deliveredAt: ts("delivered_at"),
  },
  (t) => [
    index("webhook_deliveries_webhook_idx").on(t.webhookId, t.createdAt),
    index("webhook_deliveries_pending_idx").on(t.createdAt).where(sql`status = 'pending'`),
  ],
);

export type Webhook = typeof webhooks.$inferSelect;
export type WebhookDelivery = typeof webhookDeliveries.$inferSelect;
