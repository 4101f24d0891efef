import { poolSummary } from "../../domain/pool";
import { createRouter, noInput, viewerProcedure } from "../trpc";

export const poolRouter = createRouter({
  /**
   * Availability per fleet the caller may claim from: anonymous visitors see the fleets open to
   * everyone; a researcher also sees their groups' fleets; admins see all. Counts only.
   */
  summary: viewerProcedure
    .meta({ description: "Ready, starting and in-use VMs per fleet, as the portal shows them." })
    .input(noInput)
    .query(({ ctx }) => poolSummary(ctx.db, ctx.viewer)),
});
