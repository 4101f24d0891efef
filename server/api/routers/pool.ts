import { poolSummary } from "../../domain/allocation";
import { createRouter, noInput, publicProcedure } from "../trpc";

export const poolRouter = createRouter({
  /** Availability per fleet: counts only, so anonymous visitors may see it. */
  summary: publicProcedure.input(noInput).query(({ ctx }) => poolSummary(ctx.db)),
});
