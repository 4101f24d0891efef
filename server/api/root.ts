import { agentRouter } from "./routers/agent";
import { fleetRouter } from "./routers/fleet";
import { operationRouter } from "./routers/operation";
import { poolRouter } from "./routers/pool";
import { vmRouter } from "./routers/vm";
import { createCallerFactory, createRouter } from "./trpc";

export const appRouter = createRouter({
  pool: poolRouter,
  vm: vmRouter,
  fleet: fleetRouter,
  operation: operationRouter,
  agent: agentRouter,
});

export type AppRouter = typeof appRouter;

export const createCaller = createCallerFactory(appRouter);
