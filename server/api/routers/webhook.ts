import { z } from "zod";
import { webhookFormat } from "../../db/schema";
import {
  createWebhook,
  deleteWebhook,
  listDeliveries,
  listWebhooks,
  sendTestEvent,
  updateWebhook,
  WEBHOOK_EVENT_TYPES,
} from "../../domain/webhooks";
import { adminProcedure, createRouter, noInput } from "../trpc";

const url = z.string().trim().min(1, "give the endpoint's URL").max(2000, "the URL is too long");
const events = z
  .array(z.enum(WEBHOOK_EVENT_TYPES))
  .min(1, "choose at least one event")
  .max(WEBHOOK_EVENT_TYPES.length);
const id = z.strictObject({ id: z.uuid() });

/** Admins' webhooks: HTTPS endpoints told of events, signed with a secret shown once. */
export const webhookRouter = createRouter({
  list: adminProcedure.input(noInput).query(({ ctx }) => listWebhooks(ctx.db)),

  /** The reply holds the signing secret; no later call shows it again. */
  create: adminProcedure
    .input(
      z.strictObject({
        url,
        events,
        format: z.enum(webhookFormat.enumValues).default("lablink"),
        secret: z
          .string()
          .min(16, "the secret must be at least 16 characters")
          .max(200, "the secret is too long")
          .optional(),
      }),
    )
    .mutation(({ ctx, input }) =>
      createWebhook(ctx.db, { ...input, userId: ctx.user.id, actor: ctx.actor }),
    ),

  update: adminProcedure
    .input(
      z.strictObject({
        id: z.uuid(),
        url: url.optional(),
        events: events.optional(),
        format: z.enum(webhookFormat.enumValues).optional(),
        enabled: z.boolean().optional(),
      }),
    )
    .mutation(({ ctx, input }) => updateWebhook(ctx.db, { ...input, actor: ctx.actor })),

  delete: adminProcedure
    .input(id)
    .mutation(({ ctx, input }) => deleteWebhook(ctx.db, { id: input.id, actor: ctx.actor })),

  /** Queues a `webhook.test` delivery; its result shows in the delivery history. */
  test: adminProcedure
    .input(id)
    .mutation(({ ctx, input }) => sendTestEvent(ctx.db, { id: input.id, actor: ctx.actor })),

  deliveries: adminProcedure
    .input(
      z.strictObject({
        webhookId: z.uuid(),
        limit: z.number().int().min(1).max(200).default(50),
      }),
    )
    .query(({ ctx, input }) => listDeliveries(ctx.db, input)),
});
