import { z } from "zod";

const cidr = z
  .string()
  .trim()
  .max(18)
  .regex(
    /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\/(3[0-2]|[12]?\d)$/,
    "must be an IPv4 CIDR block such as 203.0.113.0/24",
  )
  .refine((c) => !c.endsWith("/0"), {
    message: "SSH may not be opened to the whole internet; name your lab's address ranges",
  });

/**
 * What a terraform fleet configures beyond the fleet columns (instance type, region, image).
 * Stored in `fleets.config`; never secrets (tokens are generated per VM at apply time).
 */
export const terraformFleetConfig = z.strictObject({
  ami: z
    .string()
    .regex(/^ami-[0-9a-f]{8,17}$/, "must be an AMI id (ami-…)")
    .optional(),
  subnetId: z
    .string()
    .regex(/^subnet-[0-9a-f]{8,17}$/, "must be a subnet id (subnet-…)")
    .optional(),
  vpcId: z
    .string()
    .regex(/^vpc-[0-9a-f]{8,17}$/, "must be a VPC id (vpc-…)")
    .optional(),
  rootVolumeGb: z.number().int().min(20).max(4096).default(100),
  keyName: z.string().trim().min(1).max(255).optional(),
  /** The login researchers' `ssh` command names (the portal's default: ubuntu). */
  sshUser: z
    .string()
    .regex(/^[a-z_][a-z0-9_-]{0,31}$/, "must be a Unix login name such as ubuntu")
    .optional(),
  allowedSshCidrs: z.array(cidr).max(20).default([]),
  tutorialRepo: z
    .url({ protocol: /^https$/ })
    .max(500)
    .optional(),
  startupScript: z.string().max(8_000).optional(),
  startupOnError: z.enum(["fail", "continue"]).default("continue"),
  /** SUBJECT_SOFTWARE for original LabLink client images (client-image compatible fleets). */
  subjectSoftware: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9._+-]{1,64}$/, "must be a software name such as sleap")
    .optional(),
  tags: z
    .record(
      z
        .string()
        .min(1)
        .max(128)
        .regex(/^(?!lablink:)/, "the lablink: tag prefix is reserved"),
      z.string().max(256),
    )
    .refine((t) => Object.keys(t).length <= 20, "at most 20 tags")
    .default({}),
});

export type TerraformFleetConfig = z.infer<typeof terraformFleetConfig>;
