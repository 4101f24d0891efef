import { z } from "zod";

/*
 * A fleet's automatic-recovery policy. No database imports: the Fleets page reads the defaults
 * and labels from here too.
 */

const minutes = (max: number) => z.number().int().min(1, "at least 1 minute").max(max);
const attempts = z.number().int().min(0, "0 skips this step").max(10, "at most 10");

export const recoveryPolicySchema = z.strictObject({
  enabled: z.boolean(),
  /** The original LabLink rebooted VMs still initializing after 25 min. */
  stuckBootingMinutes: minutes(24 * 60),
  /** ... and VMs still rebooting after 10 min. */
  stuckRebootingMinutes: minutes(24 * 60),
  /** ... and VMs without a heartbeat for 3 min. */
  silentMinutes: minutes(24 * 60),
  /** A VM reported unhealthy this long (a passing GPU hiccup is not worth a reboot). */
  unhealthyGraceMinutes: z
    .number()
    .int()
    .min(0)
    .max(24 * 60),
  /** Tries of each step before the next one; the original tried 3 reboots. */
  maxWarmReboots: attempts,
  maxColdReboots: attempts,
  maxReplacements: attempts,
  /** Wait between two attempts on one VM; the original waited 300 s. */
  cooldownMinutes: z
    .number()
    .int()
    .min(0)
    .max(24 * 60),
  /** A held VM's holder is told this long before a reboot or replacement. */
  holderNoticeMinutes: z
    .number()
    .int()
    .min(0)
    .max(24 * 60),
});
export type RecoveryPolicy = z.infer<typeof recoveryPolicySchema>;

export const DEFAULT_RECOVERY_POLICY: RecoveryPolicy = {
  enabled: true,
  stuckBootingMinutes: 25,
  stuckRebootingMinutes: 10,
  silentMinutes: 3,
  unhealthyGraceMinutes: 2,
  maxWarmReboots: 1,
  maxColdReboots: 2,
  maxReplacements: 1,
  cooldownMinutes: 5,
  holderNoticeMinutes: 5,
};

/** What an admin sends: any subset; the rest keeps its current value. */
export const recoveryPolicyPatchSchema = recoveryPolicySchema.partial();
export type RecoveryPolicyPatch = z.infer<typeof recoveryPolicyPatchSchema>;

/**
 * The effective policy of a fleet from its stored overrides. A stored value that no longer
 * validates (an older release's setting) falls back to its default instead of stopping recovery.
 */
export function recoveryPolicyOf(stored: unknown): RecoveryPolicy {
  const policy: RecoveryPolicy = { ...DEFAULT_RECOVERY_POLICY };
  if (!stored || typeof stored !== "object") return policy;
  const shape = recoveryPolicySchema.shape;
  for (const key of Object.keys(shape) as (keyof RecoveryPolicy)[]) {
    const parsed = shape[key].safeParse((stored as Record<string, unknown>)[key]);
    // biome-ignore lint/suspicious/noExplicitAny: each key is parsed by its own schema above
    if (parsed.success) (policy as any)[key] = parsed.data;
  }
  return policy;
}

export const RECOVERY_POLICY_LABELS: Record<keyof RecoveryPolicy, string> = {
  enabled: "Automatic recovery",
  stuckBootingMinutes: "Stuck booting after (min)",
  stuckRebootingMinutes: "Stuck rebooting after (min)",
  silentMinutes: "Agent silent after (min)",
  unhealthyGraceMinutes: "Unhealthy for (min)",
  maxWarmReboots: "Warm reboots",
  maxColdReboots: "Cold reboots",
  maxReplacements: "Replacements",
  cooldownMinutes: "Cooldown between attempts (min)",
  holderNoticeMinutes: "Notice to the holder (min)",
};
