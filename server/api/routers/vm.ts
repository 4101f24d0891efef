import { z } from "zod";
import { vmState } from "../../db/schema";
import { claimVm, releaseVm } from "../../domain/allocation";
import { listVms } from "../../domain/fleets";
import { myVmWithConnection, requestCrdHandoff } from "../../domain/handoff";
import { adminProcedure, createRouter, noInput, researcherProcedure } from "../trpc";

export const vmRouter = createRouter({
  /** Claims a ready VM, or returns the one this researcher already holds. */
  claim: researcherProcedure
    .input(
      z
        .strictObject({
          fleetId: z.uuid().optional(),
          instanceType: z.string().trim().min(1).max(64).optional(),
        })
        .optional(),
    )
    .mutation(async ({ ctx, input }) => {
      const { vm, rejoined } = await claimVm(ctx.db, {
        userId: ctx.user.id,
        fleetId: input?.fleetId,
        instanceType: input?.instanceType,
        actor: ctx.actor,
      });
      return { vmId: vm.id, name: vm.name, state: vm.state, rejoined };
    }),

  /** The researcher's VM, with the state of their remote-desktop hand-off (never its code). */
  mine: researcherProcedure
    .input(noInput)
    .query(({ ctx }) => myVmWithConnection(ctx.db, ctx.user.id)),

  /**
   * Hands the researcher's VM to Chrome Remote Desktop: the command from
   * remotedesktop.google.com/headless and a PIN. Only the --code value is used; the VM's agent
   * runs start-host itself. The outcome shows in `vm.mine`.
   */
  connectCrd: researcherProcedure
    .input(
      z.strictObject({
        command: z.string().trim().min(1).max(4096),
        pin: z.string().trim().min(1).max(32),
      }),
    )
    .mutation(({ ctx, input }) =>
      requestCrdHandoff(ctx.db, { userId: ctx.user.id, ...input, actor: ctx.actor }),
    ),

  release: researcherProcedure.input(noInput).mutation(async ({ ctx }) => {
    const vm = await releaseVm(ctx.db, { userId: ctx.user.id, actor: ctx.actor });
    return { vmId: vm.id, state: vm.state };
  }),

  list: adminProcedure
    .input(
      z
        .strictObject({
          fleetId: z.uuid().optional(),
          states: z.array(z.enum(vmState.enumValues)).max(10).optional(),
          healthy: z.boolean().optional(),
          search: z.string().trim().max(200).optional(),
          includeTerminated: z.boolean().optional(),
          sort: z.enum(["name", "state", "lastHeartbeat", "stateChanged"]).optional(),
          order: z.enum(["asc", "desc"]).optional(),
          limit: z.number().int().min(1).max(500).default(50),
          offset: z.number().int().min(0).max(1_000_000).default(0),
        })
        .default({ limit: 50, offset: 0 }),
    )
    .query(({ ctx, input }) => listVms(ctx.db, input)),
});
