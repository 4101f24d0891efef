import { poolSummary } from "../../domain/allocation";
import { createRouter, publicProcedure } from "../trpc";

export const poolRouter = createRouter({
  /** Availability per fleet: counts only, so anonymous visitors may see it. */
  summary: publicProcedure.query(({ ctx }) => poolSummary(ctx.db)),
});
