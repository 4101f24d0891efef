import { z } from "zod";
import { operationKind, operationStatus } from "../../db/schema";
import {
  getOperationDetail,
  listOperations,
  publicOperation,
  readLogs,
  requestCancel,
} from "../../domain/operations";
import { adminProcedure, createRouter } from "../trpc";

const byId = z.strictObject({ operationId: z.uuid() });

export const operationRouter = createRouter({
  list: adminProcedure
    .input(
      z
        .strictObject({
          fleetId: z.uuid().optional(),
          status: z.array(z.enum(operationStatus.enumValues)).max(5).optional(),
          kind: z.array(z.enum(operationKind.enumValues)).max(5).optional(),
          before: z.date().optional(),
          /** The previous page's `nextCursor`. */
          cursor: z.uuid().optional(),
          limit: z.number().int().min(1).max(200).default(50),
        })
        .default({ limit: 50 }),
    )
    .query(({ ctx, input }) => listOperations(ctx.db, input)),

  get: adminProcedure
    .input(byId)
    .query(({ ctx, input }) => getOperationDetail(ctx.db, input.operationId)),

  /**
   * Log lines after `after` (0 for the start). Poll with the returned `nextCursor` until `done`;
   * the UI draws `progress` as a bar.
   */
  logs: adminProcedure
    .input(
      z.strictObject({
        operationId: z.uuid(),
        after: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
        limit: z.number().int().min(1).max(1_000).default(500),
      }),
    )
    .query(({ ctx, input }) =>
      readLogs(ctx.db, input.operationId, { after: input.after, limit: input.limit }),
    ),

  cancel: adminProcedure.input(byId).mutation(async ({ ctx, input }) => {
    const op = await requestCancel(ctx.db, input.operationId, ctx.actor);
    return publicOperation(op);
  }),
});
