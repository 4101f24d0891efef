import { listFleets } from "../../domain/fleets";
import { adminProcedure, createRouter, noInput } from "../trpc";

export const fleetRouter = createRouter({
  list: adminProcedure.input(noInput).query(({ ctx }) => listFleets(ctx.db)),
});
