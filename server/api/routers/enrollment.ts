import { z } from "zod";
import {
  createEnrollmentToken,
  listEnrollmentTokens,
  revokeEnrollmentToken,
} from "../../auth/enrollment";
import { adminProcedure, createRouter } from "../trpc";

export const enrollmentRouter = createRouter({
  /** The token is in this reply only; LabLink keeps just its hash. */
  create: adminProcedure
    .input(
      z.strictObject({
        fleetId: z.uuid(),
        maxUses: z.number().int().min(1).max(1000).default(1),
        /** Default one day, at most 30. */
        expiresInS: z
          .number()
          .int()
          .min(60)
          .max(30 * 86_400)
          .default(86_400),
        label: z.string().trim().max(200).optional(),
      }),
    )
    .mutation(({ ctx, input }) => createEnrollmentToken(ctx.db, { ...input, actor: ctx.actor })),

  list: adminProcedure
    .input(z.strictObject({ fleetId: z.uuid().optional() }).default({}))
    .query(({ ctx, input }) => listEnrollmentTokens(ctx.db, input.fleetId)),

  revoke: adminProcedure
    .input(z.strictObject({ id: z.uuid() }))
    .mutation(({ ctx, input }) => revokeEnrollmentToken(ctx.db, { ...input, actor: ctx.actor })),
});
