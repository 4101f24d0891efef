import { z } from "zod";
import { actorKind } from "../../db/schema";
import { listAuditEvents } from "../../domain/audit";
import { adminProcedure, createRouter } from "../trpc";

export const auditRouter = createRouter({
  /**
   * The audit log, newest first. Pass the reply's `nextCursor` as `cursor` for the next page;
   * `action` ending in `*` matches a prefix (`vm.*`).
   */
  list: adminProcedure
    .input(
      z
        .strictObject({
          action: z
            .string()
            .trim()
            .max(100)
            .regex(/^[a-z0-9_.]*\*?$/, "An action like vm.drain, or a prefix like vm.*")
            .optional(),
          actorKind: z.enum(actorKind.enumValues).optional(),
          actor: z.string().trim().max(320).optional(),
          targetKind: z
            .string()
            .trim()
            .max(64)
            .regex(/^[a-z_]*$/, "A kind like vm, fleet, user or operation")
            .optional(),
          targetId: z.string().trim().max(200).optional(),
          from: z.date().optional(),
          to: z.date().optional(),
          cursor: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
          limit: z.number().int().min(1).max(200).default(50),
        })
        .default({ limit: 50 }),
    )
    .query(({ ctx, input }) =>
      listAuditEvents(ctx.db, {
        ...input,
        // Empty filter fields (a cleared form input) mean "any".
        action: input.action || undefined,
        actor: input.actor || undefined,
        targetKind: input.targetKind || undefined,
        targetId: input.targetId || undefined,
      }),
    ),
});
