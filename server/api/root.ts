import { agentRouter } from "./routers/agent";
import { auditRouter } from "./routers/audit";
import { bookingRouter } from "./routers/booking";
import { enrollmentRouter } from "./routers/enrollment";
import { fleetRouter } from "./routers/fleet";
import { groupRouter } from "./routers/group";
import { operationRouter } from "./routers/operation";
import { poolRouter } from "./routers/pool";
import { profileRouter } from "./routers/profile";
import { usageRouter } from "./routers/usage";
import { userRouter } from "./routers/user";
import { vmRouter } from "./routers/vm";
import { webhookRouter } from "./routers/webhook";
import { createCallerFactory, createRouter } from "./trpc";

export const appRouter = createRouter({
  pool: poolRouter,
  vm: vmRouter,
  fleet: fleetRouter,
  operation: operationRouter,
  agent: agentRouter,
  user: userRouter,
  group: groupRouter,
  enrollment: enrollmentRouter,
  profile: profileRouter,
  audit: auditRouter,
  usage: usageRouter,
  webhook: webhookRouter,
  booking: bookingRouter,
});

export type AppRouter = typeof appRouter;

export const createCaller = createCallerFactory(appRouter);
