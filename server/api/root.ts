import { agentRouter } from "./routers/agent";
import { fleetRouter } from "./routers/fleet";
import { poolRouter } from "./routers/pool";
import { profileRouter } from "./routers/profile";
import { vmRouter } from "./routers/vm";
import { createCallerFactory, createRouter } from "./trpc";

export const appRouter = createRouter({
  pool: poolRouter,
  vm: vmRouter,
  fleet: fleetRouter,
  agent: agentRouter,
  profile: profileRouter,
});

export type AppRouter = typeof appRouter;

export const createCaller = createCallerFactory(appRouter);
