import { enrollMachine } from "../../auth/enrollment";
import {
  acknowledge,
  pendingReply,
  recordHeartbeat,
  registerAgent,
  rotateCredential,
} from "../../domain/agents";
import { recordLogs } from "../../domain/vm-logs";
import { metrics } from "../../metrics";
import {
  ackInput,
  type EnrollReply,
  enrollInput,
  heartbeatInput,
  logsInput,
  pollInput,
  registerInput,
  rotateInput,
} from "../../protocol/agent";
import { agentProcedure, createRouter, enrollmentProcedure } from "../trpc";

export const agentRouter = createRouter({
  /**
   * A bring-your-own machine exchanges an enrollment token for its own VM record and agent
   * token, then registers like any other agent.
   */
  enroll: enrollmentProcedure.input(enrollInput).mutation(
    ({ ctx, input }): Promise<EnrollReply> =>
      enrollMachine(ctx.db, {
        tokenId: ctx.enrollmentTokenId,
        hostname: input.hostname,
        actor: ctx.actor,
      }),
  ),

  register: agentProcedure
    .input(registerInput)
    .mutation(({ ctx, input }) => registerAgent(ctx.db, input, ctx.settings, ctx.actor, ctx.agent)),

  /** A new token before the agent sets the VM up for a new holder (docs/agent-protocol.md). */
  rotate: agentProcedure.input(rotateInput).mutation(({ ctx, input }) =>
    rotateCredential(ctx.db, {
      vmId: input.vmId,
      callerCredentialId: ctx.agent.credentialId,
      reason: "assignment",
      assignmentId: input.assignmentId,
      actor: ctx.actor,
    }),
  ),

  heartbeat: agentProcedure
    .input(heartbeatInput)
    .mutation(({ ctx, input }) =>
      recordHeartbeat(ctx.db, input, ctx.settings, ctx.actor, ctx.agentVm),
    ),

  ack: agentProcedure
    .input(ackInput)
    .mutation(({ ctx, input }) => acknowledge(ctx.db, input, ctx.actor)),

  /** Log lines shipped by the agent (its own, cloud-init's, the research container's), batched. */
  logs: agentProcedure
    // Container output may hold NUL bytes: recordLogs replaces them, rather than the whole batch
    // being refused (and dropped by the agent) for one line.
    .meta({ inputGuard: { nulAllowedIn: ["lines.*.message"] } })
    .input(logsInput)
    .mutation(({ ctx, input }) => recordLogs(ctx.db, input)),

  /**
   * Long-poll: answers at once when there is something to do, otherwise when the VM changes
   * (pushed by the process's single LISTEN connection) or after `waitMs`.
   */
  poll: agentProcedure.input(pollInput).query(async ({ ctx, input }) => {
    if (input.waitMs === 0 || !ctx.events) return pendingReply(ctx.db, input.vmId, ctx.settings);
    // Listen before reading: a claim committed between the read and the wait would otherwise be
    // missed until the next heartbeat.
    await ctx.events.listen();
    const open = metrics().longPollsOpen;
    open.inc();
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    ctx.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const deadline = Date.now() + input.waitMs;
      for (;;) {
        const change = ctx.events.waitForChange(
          input.vmId,
          Math.max(0, deadline - Date.now()),
          stop.signal,
        );
        const now = await pendingReply(ctx.db, input.vmId, ctx.settings);
        if (now.commands.length > 0) return now;
        const why = await change;
        if (why === "changed") return pendingReply(ctx.db, input.vmId, ctx.settings);
        // "resync": pushes were interrupted (LISTEN reconnecting); look again and keep waiting.
        if (why === false || Date.now() >= deadline) return now;
      }
    } finally {
      open.dec();
      stop.abort();
      ctx.signal?.removeEventListener("abort", onAbort);
    }
  }),
});

/** The narrow router type the agent package imports (type only): agent procedures, nothing else. */
const agentApi = createRouter({ agent: agentRouter });
export type AgentApi = typeof agentApi;
