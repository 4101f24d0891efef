import { z } from "zod";

/**
 * What a local fleet configures in `fleets.config`: the same startup script and on-error policy
 * as a terraform fleet, run by each simulated VM's boot (agent/src/boot/simulate.ts) so both
 * outcomes of a startup script can be tried without a cloud account.
 */
export const localFleetConfig = z.strictObject({
  startupScript: z.string().max(8_000).optional(),
  startupOnError: z.enum(["fail", "continue"]).default("continue"),
});

export type LocalFleetConfig = z.infer<typeof localFleetConfig>;

/** A stored config read leniently: keys this version does not know (or bad values) are ignored. */
export function localConfigOf(config: Record<string, unknown>): LocalFleetConfig {
  const parsed = localFleetConfig.safeParse({
    startupScript: typeof config.startupScript === "string" ? config.startupScript : undefined,
    startupOnError: config.startupOnError === "fail" ? "fail" : "continue",
  });
  return parsed.success ? parsed.data : { startupOnError: "continue" };
}
