import { z } from "zod";
import { vmLogSource, vmState } from "../../db/schema";
import { claimVm, releaseVm } from "../../domain/allocation";
import { desktopStatus } from "../../domain/desktop";
import { isDomainError } from "../../domain/errors";
import { listVms } from "../../domain/fleets";
import { gpuHistory } from "../../domain/gpu-history";
import { myVmWithConnection, requestCrdHandoff } from "../../domain/handoff";
import { extendHold } from "../../domain/hold-extensions";
import { keepIdleVm, lastEndedHold } from "../../domain/hold-limits";
import { publicOperation } from "../../domain/operations";
import { requestVmOperation } from "../../domain/provisioning";
import { drainVm, forceReleaseVm, markVmFailed, undrainVm, vmDetail } from "../../domain/vm-admin";
import { listLogs } from "../../domain/vm-logs";
import { metrics } from "../../metrics";
import { adminProcedure, createRouter, noInput, rateLimit, researcherProcedure } from "../trpc";

export const vmRouter = createRouter({
  /** Claims a ready VM, or returns the one this researcher already holds. */
  claim: researcherProcedure
    .meta({
      description:
        "Claims a ready, healthy GPU VM (optionally of one fleet or instance type), or returns the one the caller already holds. Refused with 412 NO_CAPACITY when none is free, 403 QUOTA_EXCEEDED over the weekly GPU-hour quota.",
    })
    .use(rateLimit("claim", "user"))
    .input(
      z
        .strictObject({
          fleetId: z.uuid().optional(),
          instanceType: z.string().trim().min(1).max(64).optional(),
        })
        .optional(),
    )
    .mutation(async ({ ctx, input }) => {
      const started = performance.now();
      const m = metrics();
      const count = (outcome: string) => {
        m.claims.inc({ outcome });
        m.claimSeconds.observe({ outcome }, (performance.now() - started) / 1000);
      };
      try {
        const { vm, rejoined } = await claimVm(ctx.db, {
          userId: ctx.user.id,
          role: ctx.user.role,
          fleetId: input?.fleetId,
          instanceType: input?.instanceType,
          actor: ctx.actor,
        });
        count(rejoined ? "rejoined" : "claimed");
        return { vmId: vm.id, name: vm.name, state: vm.state, rejoined };
      } catch (e) {
        // The refusal's domain code (NO_CAPACITY, FORBIDDEN...); anything else is an error.
        count(isDomainError(e) ? e.code.toLowerCase() : "error");
        throw e;
      }
    }),

  /** The researcher's VM, with the state of their remote-desktop hand-off (never its code). */
  mine: researcherProcedure
    .meta({
      description:
        "The caller's VM (state, GPUs, ssh command, hold end, extensions left), or null.",
    })
    .input(noInput)
    .query(({ ctx }) => myVmWithConnection(ctx.db, ctx.user.id)),

  /**
   * Whether the caller can open this VM's browser desktop (its holder, or an admin), and whether
   * an admin is viewing it now (the holder's banner). Anyone else: NOT_FOUND.
   */
  desktop: researcherProcedure
    .input(z.strictObject({ vmId: z.uuid("Give a VM id.") }))
    .query(({ ctx, input }) => desktopStatus(ctx.db, { userId: ctx.user.id, vmId: input.vmId })),

  /** Why the researcher's last VM was taken back (hold limit, admin), if it was lately. */
  lastEnded: researcherProcedure
    .input(noInput)
    .query(({ ctx }) => lastEndedHold(ctx.db, ctx.user.id)),

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

  /**
   * "I'm still using it": the fleet's idle limit counts again from now for the researcher's VM
   * (the answer says when it would now release it, while the VM stays idle).
   */
  keepIdle: researcherProcedure
    .input(noInput)
    .mutation(({ ctx }) => keepIdleVm(ctx.db, { userId: ctx.user.id, actor: ctx.actor })),

  /**
   * "Extend": adds the fleet's step to the researcher's own hold, within the fleet's rules
   * (extensions, total); refused with the reason when someone is waiting for the fleet or the
   * weekly GPU-hour quota would be exceeded.
   */
  extend: researcherProcedure
    .meta({
      description:
        "Adds the fleet's extension step to the caller's hold. Refused with the reason in data.details.reason: no_hold_limit, not_extendable, not_claimed, ended, max_extensions, max_total, someone_waiting (412) or quota (403).",
    })
    .input(noInput)
    .mutation(({ ctx }) => extendHold(ctx.db, { userId: ctx.user.id, actor: ctx.actor })),

  release: researcherProcedure
    .meta({ description: "Gives the caller's VM back: it is wiped, then returns to the pool." })
    .input(noInput)
    .mutation(async ({ ctx }) => {
      const vm = await releaseVm(ctx.db, { userId: ctx.user.id, actor: ctx.actor });
      return { vmId: vm.id, state: vm.state };
    }),

  list: adminProcedure
    .meta({ description: "VMs with filters, sorting and paging: {rows, total}." })
    .input(
      z
        .strictObject({
          fleetId: z.uuid().optional(),
          states: z.array(z.enum(vmState.enumValues)).max(10).optional(),
          healthy: z.boolean().optional(),
          held: z.boolean().optional(),
          idle: z.boolean().optional(),
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

  /** One VM with its holder and state history (admin). */
  get: adminProcedure
    .meta({ description: "One VM with its holder and state history." })
    .input(z.strictObject({ vmId: z.uuid() }))
    .query(({ ctx, input }) => vmDetail(ctx.db, input.vmId)),

  /** A VM's shipped log lines, oldest first; `afterId` is the live tail's cursor (admin). */
  logs: adminProcedure
    .input(
      z.strictObject({
        vmId: z.uuid(),
        afterId: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
        source: z.enum(vmLogSource.enumValues).optional(),
        limit: z.number().int().min(1).max(1_000).default(200),
      }),
    )
    .query(({ ctx, input }) => listLogs(ctx.db, input)),

  /** GPU utilisation, memory and temperature over the last 1–24 h, at most ~300 points per GPU. */
  gpuHistory: adminProcedure
    .input(z.strictObject({ vmId: z.uuid(), hours: z.number().int().min(1).max(24) }))
    .query(({ ctx, input }) => gpuHistory(ctx.db, input.vmId, input.hours)),

  drain: adminProcedure
    .meta({ description: "Lets the current holder finish; the VM then stays out of the pool." })
    .input(z.strictObject({ vmId: z.uuid() }))
    .mutation(async ({ ctx, input }) => pick(await drainVm(ctx.db, input.vmId, ctx.actor))),

  undrain: adminProcedure
    .input(z.strictObject({ vmId: z.uuid() }))
    .mutation(async ({ ctx, input }) => pick(await undrainVm(ctx.db, input.vmId, ctx.actor))),

  forceRelease: adminProcedure
    .meta({ description: "Takes a VM back from its holder now (wiped, then back to the pool)." })
    .input(z.strictObject({ vmId: z.uuid() }))
    .mutation(async ({ ctx, input }) => pick(await forceReleaseVm(ctx.db, input.vmId, ctx.actor))),

  markFailed: adminProcedure
    .input(z.strictObject({ vmId: z.uuid(), reason: z.string().trim().min(3).max(500) }))
    .mutation(async ({ ctx, input }) =>
      pick(await markVmFailed(ctx.db, input.vmId, input.reason, ctx.actor)),
    ),
  /** Restarts one VM (admin); a held VM comes back to its holder. */
  reboot: adminProcedure
    .meta({ description: "Restarts one VM; a held VM comes back to its holder." })
    .input(z.strictObject({ vmId: z.uuid() }))
    .mutation(async ({ ctx, input }) => {
      const { operation } = await requestVmOperation(ctx.db, input.vmId, "vm.reboot", ctx.actor);
      return { operation: operation && publicOperation(operation) };
    }),

  /** Removes one VM for good (admin); the fleet's size drops by one. */
  terminate: adminProcedure
    .meta({ description: "Removes one VM for good; the fleet's size drops by one." })
    .input(z.strictObject({ vmId: z.uuid() }))
    .mutation(async ({ ctx, input }) => {
      // A bring-your-own machine leaves at once (no operation): its agent is told to stop.
      const r = await requestVmOperation(ctx.db, input.vmId, "vm.terminate", ctx.actor);
      return {
        operation: r.operation && publicOperation(r.operation),
        state: "vm" in r ? r.vm.state : undefined,
      };
    }),
});

/** What admin actions answer: enough to update the table, no assignment internals. */
function pick(vm: { id: string; state: string; drainRequested: boolean }) {
  return { vmId: vm.id, state: vm.state, drainRequested: vm.drainRequested };
}
