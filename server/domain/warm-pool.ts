import { z } from "zod";

/**
 * A fleet's warm pool: how many unclaimed, healthy (`ready`) VMs it keeps waiting for researchers,
 * and the most VMs it may have in all. Lives in `fleets.config.warmPool`; a fleet without it is
 * sized by hand (scale operations, one-off schedules) as before.
 */
export const warmPoolPolicySchema = z.strictObject({
  desiredReady: z
    .number()
    .int()
    .min(0, "The ready count cannot be negative.")
    .max(500, "At most 500 ready VMs."),
  maxSize: z.number().int().min(0, "The maximum size cannot be negative.").max(500),
  paused: z.boolean().default(false),
  /** Why the pool is paused (the admin's note, or the failure that made it give up). */
  pausedReason: z.string().max(500).nullable().default(null),
  /** First wait after a failed launch; doubles with each further consecutive failure. */
  backoffBaseS: z.number().int().min(1).max(86_400).default(60),
  backoffMaxS: z.number().int().min(1).max(86_400).default(3_600),
  /** After this many failed launches in a row the pool pauses itself until an admin resumes it. */
  maxConsecutiveFailures: z.number().int().min(1).max(100).default(5),
});
export type WarmPoolPolicy = z.infer<typeof warmPoolPolicySchema>;
export type WarmPoolPolicyInput = z.input<typeof warmPoolPolicySchema>;

export const WARM_POOL_DEFAULTS = {
  paused: false,
  pausedReason: null,
  backoffBaseS: 60,
  backoffMaxS: 3_600,
  maxConsecutiveFailures: 5,
} as const satisfies Partial<WarmPoolPolicy>;

/** The policy in a fleet's config, or null when the fleet has no warm pool (or a broken one). */
export function warmPoolPolicyOf(config: Record<string, unknown> | null | undefined) {
  const raw = config?.warmPool;
  if (raw === undefined || raw === null) return null;
  const parsed = warmPoolPolicySchema.safeParse(raw);
  return parsed.success ? parsed.data : null;
}

export type WarmPoolCounts = {
  /** Unclaimed, healthy, waiting for a researcher. */
  ready: number;
  /** Provisioning or booting: will be ready soon (or fail). */
  booting: number;
  /** Claimed by a researcher (or being handed back): not part of the pool. */
  held: number;
  failed: number;
  /** Every VM not terminated, whatever its state. */
  total: number;
};

export type WarmPoolFailures = {
  /** Launch failures since the last launch that worked. */
  consecutive: number;
  lastAt: Date | null;
};

export type WarmPoolStatus = "ok" | "paused" | "backoff" | "gave_up" | "at_max";

export type WarmPoolPlan = {
  /** The fleet size to ask for (a scale operation when it differs from the current one). */
  targetSize: number;
  /** Failed VMs should be terminated and replaced by fresh ones now. */
  replaceFailed: boolean;
  status: WarmPoolStatus;
  /** For the fleet card: why the fleet is not at the size the policy wants; null when it is. */
  reason: string | null;
  /** In backoff: when launching may start again. */
  retryAt: Date | null;
};

export type WarmPoolInput = {
  now: Date;
  policy: WarmPoolPolicy;
  counts: WarmPoolCounts;
  failures: WarmPoolFailures;
};

/** Wait after `consecutive` failures: base, 2×base, 4×base... capped at `backoffMaxS`. */
export function backoffSeconds(
  policy: Pick<WarmPoolPolicy, "backoffBaseS" | "backoffMaxS">,
  consecutive: number,
) {
  if (consecutive <= 0) return 0;
  // 2^30 × base already exceeds any cap; bounding the exponent keeps the number finite.
  const factor = 2 ** Math.min(consecutive - 1, 30);
  return Math.min(policy.backoffBaseS * factor, policy.backoffMaxS);
}

/**
 * What the warm-pool reconciler should do for one fleet, from its policy, what it has and how its
 * recent launches went. Pure: the simulation drives it with a virtual clock.
 *
 * The target is `held + desiredReady` (a claimed VM leaves the pool, so a new one is started to
 * keep the ready count), capped at `maxSize`. Shrinking is always allowed; growing and replacing
 * failed VMs wait out the backoff after a failed launch, and stop for good (status `gave_up`, the
 * reconciler then pauses the pool) after `maxConsecutiveFailures` failures in a row.
 */
export function planWarmPool(input: WarmPoolInput): WarmPoolPlan {
  const { now, policy, counts, failures } = input;
  const wanted = counts.held + policy.desiredReady;
  const capped = Math.min(policy.maxSize, wanted);
  // A failed VM still takes its slot until it is replaced, so it counts towards the total.
  const noGrowth = Math.min(capped, counts.total);

  if (policy.paused) {
    return {
      targetSize: counts.total,
      replaceFailed: false,
      status: "paused",
      reason: policy.pausedReason ? `Paused: ${policy.pausedReason}` : "Paused by an admin.",
      retryAt: null,
    };
  }
  if (failures.consecutive >= policy.maxConsecutiveFailures) {
    return {
      targetSize: noGrowth,
      replaceFailed: false,
      status: "gave_up",
      reason: `Gave up after ${failures.consecutive} failed launches in a row; resume the pool to try again.`,
      retryAt: null,
    };
  }
  if (failures.consecutive > 0 && failures.lastAt) {
    const retryAt = new Date(
      failures.lastAt.getTime() + backoffSeconds(policy, failures.consecutive) * 1000,
    );
    if (retryAt.getTime() > now.getTime()) {
      const short = capped > counts.total || counts.failed > 0;
      return {
        targetSize: noGrowth,
        replaceFailed: false,
        status: "backoff",
        reason: short
          ? `Backing off until ${retryAt.toISOString()} after ${failures.consecutive} failed launch${failures.consecutive === 1 ? "" : "es"}.`
          : null,
        retryAt,
      };
    }
  }
  if (wanted > policy.maxSize) {
    return {
      targetSize: capped,
      replaceFailed: counts.failed > 0,
      status: "at_max",
      reason: `At its maximum size of ${policy.maxSize}: ${counts.held} held + ${policy.desiredReady} ready wanted.`,
      retryAt: null,
    };
  }
  return {
    targetSize: capped,
    replaceFailed: counts.failed > 0,
    status: "ok",
    reason: null,
    retryAt: null,
  };
}
