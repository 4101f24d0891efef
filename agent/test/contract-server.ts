import type { AddressInfo } from "node:net";
import { initTRPC, TRPCError } from "@trpc/server";
import { createHTTPServer } from "@trpc/server/adapters/standalone";
import superjson from "superjson";
import {
  type AckInput,
  type AgentCommand,
  type AgentReply,
  ackInput,
  type HeartbeatInput,
  heartbeatInput,
  pollInput,
  type RegisterInput,
  registerInput,
} from "../../server/protocol/agent";

/**
 * A stand-in for the LabLink server's `agent.*` procedures over real HTTP, validating every input
 * with the server's own zod schemas (server/protocol/agent.ts). It checks the agent against
 * the contract without a database; the server's behaviour is tested on the server side.
 */
export async function startContractServer(options: { token: string }) {
  const state = {
    token: options.token,
    commands: [] as AgentCommand[],
    heartbeatIntervalS: 15,
    registers: [] as RegisterInput[],
    heartbeats: [] as HeartbeatInput[],
    acks: [] as AckInput[],
    authHeaders: [] as string[],
    unauthorized: 0,
    /** Next calls of this procedure answer with this error. */
    failWith: null as null | { path: string; code: TRPCError["code"]; times: number },
  };
  const waiters = new Set<() => void>();
  const setCommands = (commands: AgentCommand[]) => {
    state.commands = commands;
    for (const wake of waiters) wake();
  };
  const reply = (vmId: string): AgentReply => ({
    vmId,
    state: state.commands.some((c) => c.type === "assign") ? "claimed" : "ready",
    heartbeatIntervalS: state.heartbeatIntervalS,
    commands: state.commands,
    reRegister: false,
  });

  const t = initTRPC
    .context<{ authorization: string | undefined }>()
    .create({ transformer: superjson });
  const agentProcedure = t.procedure.use(({ ctx, path, next }) => {
    state.authHeaders.push(ctx.authorization ?? "");
    if (ctx.authorization !== `Bearer ${state.token}`) {
      state.unauthorized += 1;
      throw new TRPCError({ code: "UNAUTHORIZED", message: "Agent token is not valid." });
    }
    const f = state.failWith;
    if (f && f.times > 0 && (f.path === "*" || f.path === path)) {
      f.times -= 1;
      throw new TRPCError({ code: f.code, message: `injected ${f.code}` });
    }
    return next();
  });

  const router = t.router({
    agent: t.router({
      register: agentProcedure.input(registerInput).mutation(({ input }) => {
        state.registers.push(input);
        return reply(input.vmId);
      }),
      heartbeat: agentProcedure.input(heartbeatInput).mutation(({ input }) => {
        state.heartbeats.push(input);
        return reply(input.vmId);
      }),
      ack: agentProcedure.input(ackInput).mutation(({ input }) => {
        state.acks.push(input);
        setCommands(
          state.commands.filter(
            (c) =>
              c.type === "shutdown" ||
              c.type !== input.type ||
              c.assignmentId !== input.assignmentId,
          ),
        );
        return { ok: true as const };
      }),
      poll: agentProcedure.input(pollInput).query(async ({ input, signal }) => {
        if (state.commands.length > 0 || input.waitMs === 0) return reply(input.vmId);
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            waiters.delete(done);
            resolve();
          };
          const timer = setTimeout(done, input.waitMs);
          waiters.add(done);
          signal?.addEventListener("abort", done, { once: true });
        });
        return reply(input.vmId);
      }),
    }),
  });

  const server = createHTTPServer({
    router,
    basePath: "/api/trpc/",
    createContext: ({ req }) => ({ authorization: req.headers.authorization }),
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    state,
    setCommands,
    close: () =>
      new Promise<void>((resolve) => {
        for (const wake of waiters) wake();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
