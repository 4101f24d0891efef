import { z } from "zod";
import { usageReport } from "../../domain/usage";
import { adminProcedure, createRouter } from "../trpc";

export const usageRouter = createRouter({
  /**
   * Hours and GPU-hours held per researcher and per fleet over the last `days` days (from the
   * audit log; see server/domain/usage.ts).
   */
  report: adminProcedure
    .input(z.strictObject({ days: z.number().int().min(1).max(365).default(30) }))
    .query(({ ctx, input }) => {
      const to = new Date();
      return usageReport(ctx.db, new Date(to.getTime() - input.days * 86_400_000), to);
    }),
});
