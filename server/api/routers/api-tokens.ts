import { z } from "zod";
import {
  createApiToken,
  listApiTokens,
  MAX_API_TOKEN_DAYS,
  revokeApiToken,
} from "../../auth/api-tokens";
import { apiTokenScope } from "../../db/schema";
import { adminSessionProcedure, createRouter, noInput } from "../trpc";

/** An admin's own API tokens, managed from a signed-in session only (never with a token). */
export const apiTokenRouter = createRouter({
  list: adminSessionProcedure.input(noInput).query(({ ctx }) => listApiTokens(ctx.db, ctx.user.id)),

  /** The token is in this reply only; LabLink keeps just its hash. */
  create: adminSessionProcedure
    .input(
      z.strictObject({
        name: z.string().trim().min(1, "give the token a name").max(64),
        scope: z.enum(apiTokenScope.enumValues),
        expiresInDays: z
          .number()
          .int("must be a whole number of days")
          .min(1, "must be at least 1 day")
          .max(MAX_API_TOKEN_DAYS, `must be at most ${MAX_API_TOKEN_DAYS} days`)
          .default(90),
      }),
    )
    .mutation(({ ctx, input }) =>
      createApiToken(ctx.db, { ...input, userId: ctx.user.id, actor: ctx.actor }),
    ),

  revoke: adminSessionProcedure
    .input(z.strictObject({ id: z.uuid() }))
    .mutation(({ ctx, input }) =>
      revokeApiToken(ctx.db, { userId: ctx.user.id, id: input.id, actor: ctx.actor }),
    ),
});
