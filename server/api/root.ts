import { agentRouter } from "./routers/agent";
import { enrollmentRouter } from "./routers/enrollment";
import { fleetRouter } from "./routers/fleet";
import { groupRouter } from "./routers/group";
import { poolRouter } from "./routers/pool";
import { userRouter } from "./routers/user";
import { vmRouter } from "./routers/vm";
import { createCallerFactory, createRouter } from "./trpc";

export const appRouter = createRouter({
  pool: poolRouter,
  vm: vmRouter,
  fleet: fleetRouter,
  agent: agentRouter,
  user: userRouter,
  group: groupRouter,
  enrollment: enrollmentRouter,
});

export type AppRouter = typeof appRouter;

export const createCaller = createCallerFactory(appRouter);
