import { listFleets } from "../../domain/fleets";
import { adminProcedure, createRouter } from "../trpc";

export const fleetRouter = createRouter({
  list: adminProcedure.query(({ ctx }) => listFleets(ctx.db)),
});
