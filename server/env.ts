import { z } from "zod";
import { parseTrustProxy } from "./http";

/**
 * The one reader of process.env. Everything else imports `env()`; parsing is lazy so that
 * `next build` and unit tests can load modules without a full environment.
 */
const bool = z
  .enum(["true", "false", "1", "0", ""])
  .optional()
  .transform((v) => v === "true" || v === "1");

const isLoopbackHost = (host: string) =>
  host === "localhost" || host === "::1" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);

const schema = z
  .object({
    NODE_ENV: z.enum(["development", "production", "test"]).default("development"),
    DATABASE_URL: z
      .string()
      .regex(/^postgres(ql)?:\/\//, "must be a postgres:// or postgresql:// URL")
      .optional(),
    PORT: z.coerce.number().int().min(1).max(65535).default(3000),
    /** Interface the web server binds to. Defaults to loopback when development sign-in is on. */
    HOST: z.string().min(1).optional(),
    /** The URL users and agents reach the server at, e.g. https://lablink.example.edu. */
    LABLINK_PUBLIC_URL: z.url().optional(),
    AUTH_SECRET: z
      .string()
      .min(32, "must be at least 32 characters (openssl rand -base64 32)")
      .optional(),
    LABLINK_DEV_LOGIN: bool,
    LABLINK_DATA_DIR: z.string().min(1).default(".data"),
    LABLINK_EMBEDDED_PG_PORT: z.coerce.number().int().min(1024).max(65535).default(54329),
    LABLINK_HEARTBEAT_INTERVAL_S: z.coerce.number().int().min(1).max(3600).default(15),
    /**
     * Heartbeats that change nothing material (only fresh GPU readings) are written together,
     * at most this many milliseconds later; 0 writes every heartbeat at once.
     */
    LABLINK_HEARTBEAT_FLUSH_MS: z.coerce.number().int().min(0).max(10_000).default(1000),
    /** At most one GPU sample per VM per this many seconds, for the VM detail charts (0: none). */
    LABLINK_GPU_SAMPLE_INTERVAL_S: z.coerce.number().int().min(0).max(3600).default(60),
    /** GPU samples older than this are deleted by a periodic job. */
    LABLINK_GPU_SAMPLE_RETENTION_HOURS: z.coerce.number().int().min(1).max(8760).default(24),
    LABLINK_WEBHOOK_HISTORY_DAYS: z.coerce.number().int().min(1).max(3650).default(30),
    /** An agent silent for this long is marked unhealthy and its VM leaves the pool. */
    LABLINK_AGENT_STALE_S: z.coerce.number().int().min(5).max(86400).default(60),
    /** Size of the simulated local fleet `npm start` keeps running (default 4 with embedded Postgres, else 0). */
    LABLINK_LOCAL_FLEET_SIZE: z.coerce.number().int().min(0).max(64).optional(),
    /** A worker that has not renewed its hold on a running operation this long is presumed dead. */
    LABLINK_OPERATION_LEASE_S: z.coerce.number().int().min(5).max(3600).default(30),
    /** Terraform or OpenTofu executable for terraform fleets. */
    LABLINK_TERRAFORM_BIN: z.string().min(1).default("terraform"),
    /** Per-fleet Terraform working folders (default: <data dir>/terraform). */
    LABLINK_TERRAFORM_WORK_DIR: z.string().min(1).optional(),
    /** Seconds between SIGINT and SIGTERM when a Terraform run is cancelled. */
    LABLINK_TERRAFORM_CANCEL_GRACE_S: z.coerce.number().int().min(1).max(600).default(30),
    /** Where Terraform keeps state: a local folder per fleet, or S3. */
    LABLINK_TERRAFORM_BACKEND: z.enum(["local", "s3"]).default("local"),
    LABLINK_TERRAFORM_S3_BUCKET: z.string().min(3).max(63).optional(),
    LABLINK_TERRAFORM_S3_REGION: z.string().min(1).max(32).optional(),
    /** DynamoDB lock table; without it the S3 backend locks with a lock file in the bucket. */
    LABLINK_TERRAFORM_S3_LOCK_TABLE: z.string().min(1).max(255).optional(),
    /**
     * Container image of the agent that terraform fleets' VMs run, built from this repository by
     * scripts/build-images.sh (<registry>/lablink-agent:<version>). No default: without it,
     * terraform fleets cannot be created and the worker refuses their operations.
     */
    LABLINK_AGENT_IMAGE: z.string().trim().min(1).max(300).optional(),
    /**
     * An S3-compatible endpoint for work archives (MinIO, Ceph...), addressed path-style; unset:
     * AWS S3 in each fleet's region.
     */
    LABLINK_S3_ENDPOINT: z.url().optional(),
    /** How often EC2 is compared with the database (seconds; 0 turns reconciliation off). */
    LABLINK_RECONCILE_INTERVAL_S: z.coerce.number().int().min(0).max(86400).default(60),
    /**
     * How often a worker looks after local fleets (seconds): takes those no worker owns (one whose
     * worker died gets its agents back within about this long) and runs their queued operations.
     */
    LABLINK_LOCAL_FLEET_TICK_S: z.coerce.number().int().min(1).max(60).default(5),
    /** What to do with an instance tagged for a fleet but with no live VM row. */
    LABLINK_RECONCILE_ORPHANS: z.enum(["report", "adopt", "terminate"]).default("report"),
    LOG_LEVEL: z
      .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
      .default("info"),
    /** Emails that become admins when they sign in (comma or space separated). */
    LABLINK_ADMIN_EMAILS: z.string().max(10_000).optional(),
    /** Only these domains (example.edu) and addresses (a@b.org) may sign in; unset: anyone. */
    LABLINK_ALLOWED_EMAILS: z.string().max(10_000).optional(),
    /**
     * Which proxies may set X-Forwarded-For/-Host/-Proto: unset or false (none: headers are
     * dropped), true (one proxy in front), a hop count, or addresses/CIDR ranges (server/http.ts).
     */
    LABLINK_TRUST_PROXY: z
      .string()
      .optional()
      .transform((raw, ctx) => {
        const trust = parseTrustProxy(raw);
        if (typeof trust !== "string") return trust;
        ctx.addIssue({ code: "custom", message: trust });
        return z.NEVER;
      }),
    /** Email sign-in links: smtp(s)://user:pass@host:port. Unset: the option is hidden. */
    LABLINK_SMTP_URL: z
      .string()
      .regex(/^smtps?:\/\//, "must be an smtp:// or smtps:// URL")
      .optional(),
    LABLINK_EMAIL_FROM: z.string().min(3).max(200).optional(),
    /** Bearer token Prometheus sends to GET /api/metrics; unset: the endpoint answers 404. */
    LABLINK_METRICS_TOKEN: z.string().min(16, "must be at least 16 characters").max(200).optional(),
    /**
     * The worker serves its own metrics (jobs, operations, reconciliation, webhooks) at
     * GET /metrics on this port, behind LABLINK_METRICS_TOKEN; unset: no listener.
     */
    LABLINK_WORKER_METRICS_PORT: z.coerce.number().int().min(1).max(65535).optional(),
    /** Where the worker's metrics listener binds; loopback unless Prometheus scrapes from afar. */
    LABLINK_WORKER_METRICS_HOST: z.string().min(1).max(255).default("127.0.0.1"),
    /**
     * With SMTP set up, researchers are emailed this many minutes before a hold or idle limit
     * releases their VM; 0: no reminders.
     */
    LABLINK_HOLD_REMINDER_MINUTES: z.coerce.number().int().min(0).max(1440).default(15),
    /** A generic OpenID Connect provider (Keycloak, CILogon, Google Workspace, Entra...). */
    LABLINK_OIDC_ISSUER: z.url().optional(),
    LABLINK_OIDC_CLIENT_ID: z.string().min(1).optional(),
    LABLINK_OIDC_CLIENT_SECRET: z.string().min(1).optional(),
    LABLINK_OIDC_NAME: z.string().min(1).max(60).default("University sign-in"),
    /**
     * Sign in OIDC users whose provider does not say `email_verified: true` (only for a provider
     * that verifies every address it hands out but omits the claim). Off: such users are refused.
     */
    LABLINK_OIDC_ALLOW_UNVERIFIED_EMAIL: bool,
    AUTH_GITHUB_ID: z.string().min(1).optional(),
    AUTH_GITHUB_SECRET: z.string().min(1).optional(),
  })
  .superRefine((e, ctx) => {
    if (e.LABLINK_TERRAFORM_BACKEND === "s3" && !e.LABLINK_TERRAFORM_S3_BUCKET) {
      ctx.addIssue({
        code: "custom",
        path: ["LABLINK_TERRAFORM_S3_BUCKET"],
        message: "is required when LABLINK_TERRAFORM_BACKEND=s3",
      });
    }
    const oidc = [e.LABLINK_OIDC_ISSUER, e.LABLINK_OIDC_CLIENT_ID, e.LABLINK_OIDC_CLIENT_SECRET];
    if (oidc.some(Boolean) && !oidc.every(Boolean)) {
      ctx.addIssue({
        code: "custom",
        path: ["LABLINK_OIDC_ISSUER"],
        message:
          "set LABLINK_OIDC_ISSUER, LABLINK_OIDC_CLIENT_ID and LABLINK_OIDC_CLIENT_SECRET together",
      });
    }
    if (Boolean(e.AUTH_GITHUB_ID) !== Boolean(e.AUTH_GITHUB_SECRET)) {
      ctx.addIssue({
        code: "custom",
        path: ["AUTH_GITHUB_ID"],
        message: "set AUTH_GITHUB_ID and AUTH_GITHUB_SECRET together",
      });
    }
    if (e.LABLINK_SMTP_URL && !e.LABLINK_PUBLIC_URL) {
      // Sign-in links are built from it alone: from a Host header, a forged one would mail a
      // victim a real link to someone else's host.
      ctx.addIssue({
        code: "custom",
        path: ["LABLINK_PUBLIC_URL"],
        message:
          "is required with LABLINK_SMTP_URL (sign-in links and reminders point at it, never at a request's Host header)",
      });
    }
    if (e.LABLINK_SMTP_URL && !e.LABLINK_EMAIL_FROM) {
      ctx.addIssue({
        code: "custom",
        path: ["LABLINK_EMAIL_FROM"],
        message: "is required with LABLINK_SMTP_URL (the sender of sign-in links)",
      });
    }
    if (!e.LABLINK_DEV_LOGIN) return;
    if (e.LABLINK_PUBLIC_URL && !isLoopbackHost(new URL(e.LABLINK_PUBLIC_URL).hostname)) {
      ctx.addIssue({
        code: "custom",
        path: ["LABLINK_DEV_LOGIN"],
        message:
          "development sign-in signs anyone in without a password; it cannot be on while LABLINK_PUBLIC_URL points outside localhost",
      });
    }
    if (e.HOST && !isLoopbackHost(e.HOST)) {
      ctx.addIssue({
        code: "custom",
        path: ["LABLINK_DEV_LOGIN"],
        message: `development sign-in cannot be on while the server listens on ${e.HOST}; use HOST=127.0.0.1 or turn LABLINK_DEV_LOGIN off`,
      });
    }
  });

export type Env = z.infer<typeof schema>;

/** Every variable LabLink reads (deployment files are checked against it). */
export const ENV_NAMES: readonly string[] = Object.keys(schema.shape);

export class EnvError extends Error {}

/** Parses an environment; throws EnvError naming each bad variable and what is wrong with it. */
export function parseEnv(source: Record<string, string | undefined>): Env {
  // `VAR=` in a shell or a .env file means "not set", not "set to nothing".
  const present = Object.fromEntries(Object.entries(source).filter(([, v]) => v !== ""));
  const result = schema.safeParse(present);
  if (result.success) return result.data;
  const lines = result.error.issues.map(
    (issue) => `  ${issue.path.join(".") || "(environment)"}: ${issue.message}`,
  );
  throw new EnvError(`Invalid configuration:\n${lines.join("\n")}`);
}

let cached: Env | undefined;

export function env(): Env {
  cached ??= parseEnv(process.env);
  return cached;
}

/** Host the web server listens on. */
export function listenHost(e: Env = env()): string {
  return e.HOST ?? (e.LABLINK_DEV_LOGIN ? "127.0.0.1" : "0.0.0.0");
}

export { isLoopbackHost };
