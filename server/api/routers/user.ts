import { z } from "zod";
import { userRole } from "../../db/schema";
import { listUsers, setUserRole } from "../../domain/users";
import { adminProcedure, createRouter, noInput, researcherProcedure } from "../trpc";

export const userRouter = createRouter({
  /** Who am I, as the server sees it now (role re-read from the database). */
  me: researcherProcedure.input(noInput).query(({ ctx }) => ctx.user),

  list: adminProcedure
    .input(
      z
        .strictObject({
          search: z.string().trim().max(200).optional(),
          limit: z.number().int().min(1).max(500).default(100),
          offset: z.number().int().min(0).max(1_000_000).default(0),
        })
        .default({ limit: 100, offset: 0 }),
    )
    .query(({ ctx, input }) => listUsers(ctx.db, input)),

  /** Promote or demote. The last admin cannot be demoted. */
  setRole: adminProcedure
    .input(z.strictObject({ userId: z.uuid(), role: z.enum(userRole.enumValues) }))
    .mutation(({ ctx, input }) => setUserRole(ctx.db, { ...input, actor: ctx.actor })),
});
