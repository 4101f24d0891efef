import { TRPCError } from "@trpc/server";
import { z } from "zod";
import { fitEnrollmentTokens, revokeFleetEnrollmentTokens } from "../../auth/enrollment";
import { localFleetConfig } from "../../cloud/local/config";
import { terraformFleetConfig } from "../../cloud/terraform/config";
import { createByoFleet, destroyByoFleet, resizeByoFleet } from "../../domain/byo";
import { getFleet, listFleets } from "../../domain/fleets";
import { setHoldExtensionRules } from "../../domain/hold-extensions";
import { setFleetLimit } from "../../domain/hold-limits";
import { publicOperation } from "../../domain/operations";
import { createFleet, destroyFleet, scaleFleet } from "../../domain/provisioning";
import { setRecoveryPolicy } from "../../domain/recovery";
import { recoveryPolicyPatchSchema } from "../../domain/recovery-policy";
import {
  addRecurringSchedule,
  deleteRecurringSchedule,
  listRecurringSchedules,
  recurringScheduleInput,
} from "../../domain/recurring-schedules";
import { cancelSchedule, listSchedules, scheduleScale } from "../../domain/schedules";
import {
  pauseWarmPool,
  resumeWarmPool,
  setWarmPool,
  warmPoolPolicySchema,
} from "../../domain/warm-pool";
import { setWorkArchive, workArchiveConfigSchema } from "../../domain/work-archive";
import { setWorkDownloadLimit, WORK_DOWNLOAD_MAX_MIB } from "../../domain/work-export";
import { adminProcedure, createRouter, noInput } from "../trpc";

/** Fleet sizes an admin may ask for in one request. */
export const MAX_FLEET_SIZE = 200;
/** Hold limits an admin may set: shorter than 15 minutes leaves no time to work, 30 days at most. */
export const MIN_HOLD_MINUTES = 15;
export const MAX_HOLD_MINUTES = 43_200;

const holdMinutes = z
  .number()
  .int("must be a whole number of minutes")
  .min(MIN_HOLD_MINUTES, `must be at least ${MIN_HOLD_MINUTES} minutes`)
  .max(MAX_HOLD_MINUTES, `must be at most ${MAX_HOLD_MINUTES} minutes (30 days)`);

/**
 * Idle limits an admin may set: 10 minutes to 7 days. The agent reports idleness after its own
 * `LABLINK_IDLE_AFTER_S` (30 minutes by default), so a shorter limit acts at that point.
 */
export const MIN_IDLE_MINUTES = 10;
export const MAX_IDLE_MINUTES = 10_080;

const idleMinutes = z
  .number()
  .int("must be a whole number of minutes")
  .min(MIN_IDLE_MINUTES, `must be at least ${MIN_IDLE_MINUTES} minutes`)
  .max(MAX_IDLE_MINUTES, `must be at most ${MAX_IDLE_MINUTES} minutes (7 days)`);

/** A weekly GPU-hour quota per researcher: 1 to 10,000 GPU-hours. */
const gpuHours = z
  .number()
  .int("must be a whole number of GPU-hours")
  .min(1, "must be at least 1 GPU-hour")
  .max(10_000, "must be at most 10,000 GPU-hours");

const common = {
  name: z
    .string()
    .trim()
    .min(2)
    .max(40)
    .regex(
      /^[a-z][a-z0-9-]*[a-z0-9]$/,
      "use lowercase letters, digits and dashes (it becomes part of VM names and cloud tags)",
    ),
  instanceType: z
    .string()
    .trim()
    .min(1)
    .max(64)
    .regex(/^[a-z0-9][a-z0-9.-]*$/, "must be an instance type such as g5.xlarge"),
  gpuModel: z.string().trim().min(1).max(100).optional(),
  gpuCount: z.number().int().min(0).max(16).default(1),
  size: z.number().int().min(0).max(MAX_FLEET_SIZE),
  /** A researcher's hold limit: 15 minutes to 30 days; null or absent: no limit. */
  maxHoldMinutes: holdMinutes.nullable().optional(),
  /** Release a held VM idle this long: 10 minutes to 7 days; null or absent: never. */
  idleReleaseMinutes: idleMinutes.nullable().optional(),
  /** GPU-hours each researcher may use in any 7 days; null or absent: no quota. */
  gpuHoursPerWeek: gpuHours.nullable().optional(),
  /** Groups whose members may claim its VMs; absent or empty: every researcher. */
  groupIds: z.array(z.uuid()).max(50).optional(),
  /** Researchers get sudo and the docker group; released VMs are replaced instead of wiped. */
  rootForResearchers: z.boolean().default(false),
};

/** How long a byo fleet's enrollment tokens work: an hour to 30 days (a week by default). */
const ENROLLMENT_DEFAULT_S = 7 * 86_400;
const enrollmentExpiry = z
  .number()
  .int()
  .min(3_600, "must be at least an hour")
  .max(30 * 86_400, "must be at most 30 days");
const enrollmentExpiresInS = enrollmentExpiry.default(ENROLLMENT_DEFAULT_S);

const createInput = z.discriminatedUnion("driver", [
  z.strictObject({
    driver: z.literal("local"),
    ...common,
    /** The simulated VMs run the startup script for real (server/cloud/local/config.ts). */
    config: localFleetConfig.default(localFleetConfig.parse({})),
  }),
  /** Bring-your-own: `size` machines are expected; the answer has their enrollment token. */
  z.strictObject({
    driver: z.literal("byo"),
    ...common,
    instanceType: common.instanceType.default("byo"),
    enrollmentExpiresInS,
  }),
  z.strictObject({
    driver: z.literal("terraform"),
    ...common,
    region: z
      .string()
      .trim()
      .regex(/^[a-z]{2}(-[a-z]+)+-\d$/, "must be an AWS region such as us-west-2"),
    image: z.string().trim().min(1).max(300),
    /** The image is an original LabLink client image (docs/original-api.md). */
    clientImageCompat: z.boolean().default(false),
    config: terraformFleetConfig.default(terraformFleetConfig.parse({})),
  }),
]);

export const fleetRouter = createRouter({
  list: adminProcedure
    .meta({
      description:
        "Every fleet that is not destroyed, with its VM counts by state and its settings.",
    })
    .input(noInput)
    .query(({ ctx }) => listFleets(ctx.db)),

  /** Creates a fleet and queues the operation that provisions its VMs. */
  create: adminProcedure
    .meta({
      description:
        "Creates a fleet (local, terraform or bring-your-own) and starts provisioning it; answers the operation to watch.",
    })
    .input(createInput)
    .mutation(async ({ ctx, input }) => {
      if (input.driver === "byo") {
        // One transaction: a fleet is never left without the token its machines need.
        return ctx.db.transaction(async (tx) => {
          const fleet = await createByoFleet(
            tx,
            {
              name: input.name,
              instanceType: input.instanceType,
              gpuModel: input.gpuModel ?? null,
              gpuCount: input.gpuCount,
              size: input.size,
              maxHoldMinutes: input.maxHoldMinutes ?? null,
              idleReleaseMinutes: input.idleReleaseMinutes ?? null,
              gpuHoursPerWeek: input.gpuHoursPerWeek ?? null,
              groupIds: input.groupIds ?? [],
              rootForResearchers: input.rootForResearchers,
            },
            ctx.actor,
          );
          const fit = await fitEnrollmentTokens(tx, {
            fleetId: fleet.id,
            missing: input.size,
            expiresInS: input.enrollmentExpiresInS,
            actor: ctx.actor,
          });
          return { fleetId: fleet.id, operation: null, enrollment: fit.created };
        });
      }
      const { fleet, operation } = await createFleet(
        ctx.db,
        {
          name: input.name,
          driver: input.driver,
          instanceType: input.instanceType,
          gpuModel: input.gpuModel ?? null,
          gpuCount: input.gpuCount,
          region: input.driver === "terraform" ? input.region : "this machine",
          image: input.driver === "terraform" ? input.image : null,
          size: input.size,
          maxHoldMinutes: input.maxHoldMinutes ?? null,
          idleReleaseMinutes: input.idleReleaseMinutes ?? null,
          gpuHoursPerWeek: input.gpuHoursPerWeek ?? null,
          groupIds: input.groupIds ?? [],
          rootForResearchers: input.rootForResearchers,
          clientImageCompat: input.driver === "terraform" ? input.clientImageCompat : false,
          config: input.config,
        },
        ctx.actor,
        { agentImage: ctx.settings.agentImage },
      );
      return { fleetId: fleet.id, operation: publicOperation(operation), enrollment: null };
    }),

  /**
   * Scales a fleet. A bring-your-own fleet's machines are not LabLink's to create: its open
   * enrollment is fitted to the machines it misses (the answer has a new token for the shortfall,
   * or the unused uses it retired); enrolled machines stay until terminated.
   */
  scale: adminProcedure
    .meta({ description: "Sets a fleet's size; answers the operation that adds or removes VMs." })
    .input(
      z.strictObject({
        fleetId: z.uuid(),
        size: common.size,
        /** byo fleets: how long a new enrollment token works. */
        enrollmentExpiresInS: enrollmentExpiry.optional(),
      }),
    )
    .mutation(async ({ ctx, input }) => {
      const fleet = await getFleet(ctx.db, input.fleetId);
      if (fleet?.driver === "byo") {
        return ctx.db.transaction(async (tx) => {
          const { enrolled, missing } = await resizeByoFleet(
            tx,
            input.fleetId,
            input.size,
            ctx.actor,
          );
          const fit = await fitEnrollmentTokens(tx, {
            fleetId: input.fleetId,
            missing,
            expiresInS: input.enrollmentExpiresInS ?? ENROLLMENT_DEFAULT_S,
            actor: ctx.actor,
          });
          return {
            operation: null,
            enrollment: fit.created,
            enrolled,
            retiredUses: fit.retired,
          };
        });
      }
      if (input.enrollmentExpiresInS !== undefined)
        throw new TRPCError({
          code: "BAD_REQUEST",
          message: "enrollmentExpiresInS is for bring-your-own fleets only.",
        });
      const { operation } = await scaleFleet(ctx.db, input.fleetId, input.size, ctx.actor);
      return { operation: publicOperation(operation), enrollment: null };
    }),

  /**
   * Changes a fleet's weekly GPU-hour quota per researcher (null: none). Claims check it from now
   * on; current holds go on.
   */
  setQuota: adminProcedure
    .meta({ description: "Sets the weekly GPU-hour quota per researcher (null: none)." })
    .input(z.strictObject({ fleetId: z.uuid(), gpuHoursPerWeek: gpuHours.nullable() }))
    .mutation(async ({ ctx, input }) => {
      const {
        value,
        holdsPastLimit: _,
        ...change
      } = await setFleetLimit(ctx.db, input.fleetId, "quota", input.gpuHoursPerWeek, ctx.actor);
      return { ...change, gpuHoursPerWeek: value };
    }),

  /** A fleet's scheduled sizes: every pending one, soonest first, then the last 10 finished. */
  schedules: adminProcedure
    .input(z.strictObject({ fleetId: z.uuid() }))
    .query(({ ctx, input }) => listSchedules(ctx.db, input.fleetId)),

  /**
   * Scales the fleet to `size` at `at` (a workshop's start or end): the worker requests the scale
   * operation when it is due. `at` must be in the future, within a year.
   */
  scheduleScale: adminProcedure
    .input(z.strictObject({ fleetId: z.uuid(), at: z.date(), size: common.size }))
    .mutation(({ ctx, input }) => scheduleScale(ctx.db, { ...input, actor: ctx.actor })),

  /** Destroys the fleet at `at` (through the destroy operation), e.g. after a workshop. */
  scheduleDestroy: adminProcedure
    .input(z.strictObject({ fleetId: z.uuid(), at: z.date() }))
    .mutation(({ ctx, input }) =>
      scheduleScale(ctx.db, { ...input, size: 0, kind: "destroy", actor: ctx.actor }),
    ),

  /** A fleet's recurring slots, each with its next size change. */
  recurringSchedules: adminProcedure
    .input(z.strictObject({ fleetId: z.uuid() }))
    .query(({ ctx, input }) => listRecurringSchedules(ctx.db, input.fleetId)),

  /**
   * Adds a recurring slot: at each occurrence of `rrule` (DAILY/WEEKLY/MONTHLY/YEARLY) from
   * `startTime` to `endTime` in `timezone`, the fleet gets `size` (its ready count when it has a
   * warm pool), and `fallbackSize` after.
   */
  addRecurringSchedule: adminProcedure
    .input(recurringScheduleInput)
    .mutation(({ ctx, input }) => addRecurringSchedule(ctx.db, { ...input, actor: ctx.actor })),

  deleteRecurringSchedule: adminProcedure
    .input(z.strictObject({ scheduleId: z.uuid() }))
    .mutation(({ ctx, input }) => deleteRecurringSchedule(ctx.db, input.scheduleId, ctx.actor)),

  /**
   * Gives the fleet a warm pool (a number of ready VMs kept waiting, up to a maximum size), changes
   * it, or (null) removes it: the fleet is then sized by hand again.
   */
  setWarmPool: adminProcedure
    .input(z.strictObject({ fleetId: z.uuid(), policy: warmPoolPolicySchema.nullable() }))
    .mutation(({ ctx, input }) => setWarmPool(ctx.db, { ...input, actor: ctx.actor })),

  /** Stops the warm pool from changing the fleet's size until it is resumed. */
  pauseWarmPool: adminProcedure
    .input(z.strictObject({ fleetId: z.uuid(), reason: z.string().trim().max(500).optional() }))
    .mutation(({ ctx, input }) => pauseWarmPool(ctx.db, { ...input, actor: ctx.actor })),

  /** Resumes a paused warm pool (also after it gave up on failed launches). */
  resumeWarmPool: adminProcedure
    .input(z.strictObject({ fleetId: z.uuid() }))
    .mutation(({ ctx, input }) => resumeWarmPool(ctx.db, { ...input, actor: ctx.actor })),

  /** Cancels a pending scheduled size. */
  cancelSchedule: adminProcedure
    .input(z.strictObject({ scheduleId: z.uuid() }))
    .mutation(({ ctx, input }) => cancelSchedule(ctx.db, input.scheduleId, ctx.actor)),

  /**
   * Changes an existing fleet's hold limit (null: none). It applies to current holds too; the
   * answer counts the holds already past it, which the next sweep ends.
   */
  setHoldLimit: adminProcedure
    .meta({
      description:
        "Sets how long a researcher may hold a VM of the fleet (minutes, null: no limit); applies to current holds.",
    })
    .input(z.strictObject({ fleetId: z.uuid(), maxHoldMinutes: holdMinutes.nullable() }))
    .mutation(async ({ ctx, input }) => {
      const { value, ...change } = await setFleetLimit(
        ctx.db,
        input.fleetId,
        "hold",
        input.maxHoldMinutes,
        ctx.actor,
      );
      return { ...change, maxHoldMinutes: value };
    }),

  /**
   * Sets the fleet's rules for "Extend" on My VM (null: holds cannot be extended): minutes per
   * extension, extensions per hold, and the longest a hold may last in all.
   */
  setHoldExtension: adminProcedure
    .meta({
      description:
        "Sets the rules for extending a hold: minutes per extension, extensions per hold, longest hold in all (null: no extensions).",
    })
    .input(
      z.strictObject({
        fleetId: z.uuid(),
        rules: z
          .strictObject({
            stepMinutes: z
              .number()
              .int("must be a whole number of minutes")
              .min(5, "must be at least 5 minutes")
              .max(1440, "must be at most 1440 minutes (a day)"),
            maxExtensions: z
              .number()
              .int("must be a whole number")
              .min(1, "must be at least 1")
              .max(50, "must be at most 50"),
            maxTotalMinutes: holdMinutes.nullable(),
          })
          .nullable(),
      }),
    )
    .mutation(({ ctx, input }) => setHoldExtensionRules(ctx.db, { ...input, actor: ctx.actor })),

  /**
   * Changes an existing fleet's idle limit (null: never release for idleness). It applies to
   * current holds too; the answer counts the held VMs already idle past it, which the next sweep
   * releases.
   */
  /**
   * The largest work folder (MiB before compression) a researcher may download from this fleet's
   * VMs; 0 turns downloads off. Audited.
   */
  setWorkDownloadLimit: adminProcedure
    .input(
      z.strictObject({
        fleetId: z.uuid(),
        maxMib: z
          .number({ error: "The limit is a whole number of MiB." })
          .int("The limit is a whole number of MiB.")
          .min(0, "The limit cannot be negative.")
          .max(WORK_DOWNLOAD_MAX_MIB, `The limit is at most ${WORK_DOWNLOAD_MAX_MIB} MiB (1 TiB).`),
      }),
    )
    .mutation(({ ctx, input }) => setWorkDownloadLimit(ctx.db, { ...input, actor: ctx.actor })),

  /**
   * Uploads each holder's work folder to S3 before the wipe (bucket, key prefix, region, days the
   * researcher's link lasts); null turns it off. Audited.
   */
  setWorkArchive: adminProcedure
    .input(z.strictObject({ fleetId: z.uuid(), archive: workArchiveConfigSchema.nullable() }))
    .mutation(({ ctx, input }) => setWorkArchive(ctx.db, { ...input, actor: ctx.actor })),

  setIdleLimit: adminProcedure
    .meta({ description: "Sets after how many idle minutes a held VM is released (null: never)." })
    .input(z.strictObject({ fleetId: z.uuid(), idleReleaseMinutes: idleMinutes.nullable() }))
    .mutation(async ({ ctx, input }) => {
      const { value, ...change } = await setFleetLimit(
        ctx.db,
        input.fleetId,
        "idle",
        input.idleReleaseMinutes,
        ctx.actor,
      );
      return { ...change, idleReleaseMinutes: value };
    }),

  /**
   * Changes a fleet's automatic-recovery policy (thresholds, attempts per step, cooldown, notice
   * to holders, on/off); settings not given keep their value. Returns the whole policy.
   */
  setRecoveryPolicy: adminProcedure
    .input(
      z.strictObject({
        fleetId: z.uuid(),
        policy: recoveryPolicyPatchSchema.refine((p) => Object.keys(p).length > 0, {
          message: "give at least one setting to change",
        }),
      }),
    )
    .mutation(({ ctx, input }) =>
      setRecoveryPolicy(ctx.db, { fleetId: input.fleetId, patch: input.policy, actor: ctx.actor }),
    ),

  destroy: adminProcedure
    .meta({ description: "Destroys a fleet and all its VMs." })
    .input(z.strictObject({ fleetId: z.uuid() }))
    .mutation(async ({ ctx, input }) => {
      const fleet = await getFleet(ctx.db, input.fleetId);
      if (fleet?.driver === "byo") {
        // At once, no worker: its machines' agents are told to stop, no machine can join again.
        return ctx.db.transaction(async (tx) => {
          const { machines } = await destroyByoFleet(tx, input.fleetId, ctx.actor);
          await revokeFleetEnrollmentTokens(tx, input.fleetId, ctx.actor);
          return { operation: null, machinesStopped: machines };
        });
      }
      const { operation } = await destroyFleet(ctx.db, input.fleetId, ctx.actor);
      return { operation: publicOperation(operation), machinesStopped: 0 };
    }),
});
