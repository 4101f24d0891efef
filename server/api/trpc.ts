import { initTRPC, TRPCError } from "@trpc/server";
import { eq } from "drizzle-orm";
import superjson from "superjson";
import { ZodError, z } from "zod";
import { type AgentIdentity, bearerToken, verifyAgentToken } from "../auth/agent-tokens";
import { type ApiTokenCaller, presentedApiToken, verifyApiToken } from "../auth/api-tokens";
import { looksLikeEnrollmentToken, verifyEnrollmentToken } from "../auth/enrollment";
import { DEFAULT_RATE_LIMITS, enforceRateLimit, type RateLimits } from "../auth/rate-limit";
import type { Db } from "../db/client";
import { type UserRole, users } from "../db/schema";
import type { AgentSettings } from "../domain/agents";
import { domainErrorCodes, isDomainError } from "../domain/errors";
import type { Actor } from "../domain/vm-state";
import type { VmEventHub } from "../events";
import { logger } from "../log";
import { isDatabaseError, metrics } from "../metrics";
import {
  fieldName,
  findInputProblem,
  type InputGuardOptions,
  InputProblemError,
  undecodableInput,
} from "./input-guard";

/** What the session cookie says; roles are re-read from the database on every call. */
export type SessionUser = {
  id: string;
  role?: UserRole;
  name?: string | null;
  email?: string | null;
};

export type Context = {
  db: Db;
  headers: Headers;
  ip: string | null;
  /** Resolves the signed-in user from the request (Auth.js in the app, a fixture in tests). */
  getSession: () => Promise<SessionUser | null>;
  events: VmEventHub | null;
  settings: AgentSettings & { rateLimits?: RateLimits; agentImage?: string };
  signal?: AbortSignal;
};

/** Who may call a procedure: set by its tier's builder below, read by the OpenAPI document. */
export type Tier =
  | "public"
  | "viewer"
  | "researcher"
  | "admin"
  | "adminSession"
  | "agent"
  | "enrollment";

/**
 * Per-procedure settings, read by middleware and by the OpenAPI description
 * (server/api/openapi.ts): `tier` comes from the tier's builder, `description` says what the
 * procedure does for someone calling it over HTTP.
 */
export type Meta = { inputGuard?: InputGuardOptions; tier?: Tier; description?: string };

const t = initTRPC
  .context<Context>()
  .meta<Meta>()
  .create({
    transformer: superjson,
    errorFormatter({ shape, error }) {
      const cause = error.cause;
      return {
        ...shape,
        data: {
          ...shape.data,
          // Never ship stack traces to callers.
          stack: undefined,
          domainCode: isDomainError(cause) ? cause.code : undefined,
          details: isDomainError(cause) ? cause.details : undefined,
          fieldErrors:
            cause instanceof ZodError
              ? cause.issues.map((i) => ({ path: i.path.join("."), message: i.message }))
              : cause instanceof InputProblemError
                ? [{ path: fieldName(cause.problem.path), message: cause.message }]
                : undefined,
        },
      };
    },
  });

export const createRouter = t.router;

/** For procedures that take nothing: anything sent is a caller's mistake, answered with 400. */
export const noInput = z.strictObject({}).optional();
export const createCallerFactory = t.createCallerFactory;
export const mergeRouters = t.mergeRouters;

/**
 * Domain errors become tRPC errors here, in one place. Anything else that escapes a procedure is
 * a bug: logged with its stack, answered as a plain 500 without details.
 */
const errorMapping = t.middleware(async ({ ctx, next, path, type }) => {
  const started = performance.now();
  const result = await next();
  const seconds = (performance.now() - started) / 1000;
  // One line per call: never the input or headers (they carry tokens), only what and who.
  const fields = {
    path,
    type,
    ip: ctx.ip,
    ms: Math.round(seconds * 1000),
    // A domain error's own code (NOT_FOUND, CONFLICT...), not the INTERNAL_SERVER_ERROR that
    // wraps it until it is mapped below.
    code: result.ok
      ? "OK"
      : isDomainError(result.error.cause)
        ? domainErrorCodes[result.error.cause.code]
        : result.error.code,
  };
  const m = metrics();
  m.apiCalls.inc({ path, code: fields.code });
  m.apiSeconds.observe({ type }, seconds);
  if (path === "agent.heartbeat") {
    m.heartbeats.inc({ code: fields.code });
    m.heartbeatSeconds.observe(seconds);
  }
  if (fields.code === "UNAUTHORIZED" || fields.code === "FORBIDDEN") {
    logger.info(fields, "access refused");
  } else {
    logger.debug(fields, "api call");
  }
  if (!result.ok) {
    const cause = result.error.cause;
    if (isDomainError(cause)) {
      throw new TRPCError({ code: domainErrorCodes[cause.code], message: cause.message, cause });
    }
    if (result.error.code === "INTERNAL_SERVER_ERROR") {
      if (isDatabaseError(result.error.cause)) m.dbErrors.inc();
      logger.error({ err: result.error.cause ?? result.error, path, type }, "procedure failed");
      throw new TRPCError({
        code: "INTERNAL_SERVER_ERROR",
        message: "Something went wrong on the server.",
      });
    }
  }
  return result;
});

/**
 * Every procedure's input passes here before its schema: what no field may ever be (see
 * input-guard.ts) is answered with 400 naming the field, in the same shape as a schema's errors.
 * An input that superjson cannot decode is a 400 too, whichever transport read it.
 */
const inputGuard = t.middleware(async ({ next, getRawInput, meta }) => {
  let raw: unknown;
  try {
    raw = await getRawInput();
  } catch (cause) {
    // tRPC's own parse errors (not JSON at all) are 400s already.
    throw cause instanceof TRPCError ? cause : undecodableInput(cause);
  }
  const problem = findInputProblem(raw, meta?.inputGuard);
  if (problem) {
    const cause = new InputProblemError(problem);
    throw new TRPCError({ code: "BAD_REQUEST", message: cause.message, cause });
  }
  return next();
});

const base = t.procedure.use(errorMapping).use(inputGuard);

export const publicProcedure = base.meta({ tier: "public" });

/** Counts the call against a per-user or per-IP limit; over it, 429 with Retry-After. */
export function rateLimit(rule: keyof RateLimits, by: "user" | "ip") {
  return t.middleware(async ({ ctx, next }) => {
    const who = by === "user" ? (ctx as { user?: { id: string } }).user?.id : (ctx.ip ?? "unknown");
    const limits = { ...DEFAULT_RATE_LIMITS, ...ctx.settings.rateLimits };
    await enforceRateLimit(ctx.db, `${rule}:${by}:${who}`, limits[rule]);
    return next();
  });
}

/**
 * The viewer of a public procedure: the signed-in user with their current role (re-read from the
 * database), or null. Never throws for a missing or stale session.
 */
export const viewerProcedure = base.meta({ tier: "viewer" }).use(async ({ ctx, next }) => {
  const apiToken = presentedApiToken(ctx.headers);
  if (apiToken) {
    const verified = await verifyApiToken(ctx.db, apiToken);
    const viewer = verified.ok
      ? { userId: verified.caller.user.id, role: verified.caller.user.role }
      : null;
    return next({ ctx: { viewer } });
  }
  const session = await ctx.getSession();
  let viewer: { userId: string; role: UserRole } | null = null;
  if (session?.id) {
    const [user] = await ctx.db
      .select({ id: users.id, role: users.role })
      .from(users)
      .where(eq(users.id, session.id));
    if (user) viewer = { userId: user.id, role: user.role };
  }
  return next({ ctx: { viewer } });
});

type AuthedUser = { id: string; role: UserRole; name: string | null; email: string | null };

/** The API token a call came with (null for a session): its id and scope. */
type ApiTokenUse = { id: string; scope: ApiTokenCaller["scope"] } | null;

/**
 * `Authorization: Bearer llk_...` authenticates as the token's owner, and wins over a session
 * cookie sent along (the cookie is not read). A read-only token may make queries only.
 */
async function apiTokenUser(ctx: Context, token: string, type: string) {
  const verified = await verifyApiToken(ctx.db, token);
  if (!verified.ok) throw new TRPCError({ code: "UNAUTHORIZED", message: verified.reason });
  const { user, scope, tokenId } = verified.caller;
  if (scope === "read" && type !== "query") {
    throw new TRPCError({
      code: "FORBIDDEN",
      message: "This API token is read-only: it can list and read, not change anything.",
    });
  }
  const actor: Actor = { kind: "user", id: user.id, ip: ctx.ip };
  const apiToken: ApiTokenUse = { id: tokenId, scope };
  return { user: user as AuthedUser, actor, apiToken };
}

const withUser = base.use(async ({ ctx, next, type }) => {
  const token = presentedApiToken(ctx.headers);
  if (token) return next({ ctx: await apiTokenUser(ctx, token, type) });
  const session = await ctx.getSession();
  if (!session?.id) throw new TRPCError({ code: "UNAUTHORIZED", message: "Please sign in first." });
  // Read the role from the database on every call: a demoted admin loses rights immediately.
  const [user] = await ctx.db
    .select({ id: users.id, role: users.role, name: users.name, email: users.email })
    .from(users)
    .where(eq(users.id, session.id));
  if (!user)
    throw new TRPCError({
      code: "UNAUTHORIZED",
      message: "Your account no longer exists; sign in again.",
    });
  const actor: Actor = { kind: "user", id: user.id, ip: ctx.ip };
  const apiToken: ApiTokenUse = null;
  return next({ ctx: { user: user as AuthedUser, actor, apiToken } });
});

/** Any signed-in person (admins are researchers too). */
export const researcherProcedure = withUser.meta({ tier: "researcher" });

export const adminProcedure = withUser.meta({ tier: "admin" }).use(({ ctx, next }) => {
  if (ctx.user.role !== "admin") {
    throw new TRPCError({ code: "FORBIDDEN", message: "Only LabLink admins can do this." });
  }
  return next();
});

/**
 * Admins signed in with a session, not an API token: a leaked token must not be able to mint
 * itself successors that outlive its revocation.
 */
export const adminSessionProcedure = adminProcedure
  .meta({ tier: "adminSession" })
  .use(({ ctx, next }) => {
    if (ctx.apiToken) {
      throw new TRPCError({
        code: "FORBIDDEN",
        message: "API tokens cannot manage API tokens; sign in to LabLink to do this.",
      });
    }
    return next();
  });

/**
 * Agents authenticate with their VM's bearer token, and may act only for that VM: every agent
 * input names `vmId`, and it must be the token's VM.
 */
export const agentProcedure = base
  .meta({ tier: "agent" })
  .use(async ({ ctx, next, getRawInput }) => {
    const header = ctx.headers.get("authorization");
    const token = bearerToken(header);
    if (!token) {
      throw new TRPCError({
        code: "UNAUTHORIZED",
        message: header ? "Use `Authorization: Bearer <agent token>`." : "Agent token missing.",
      });
    }
    const verified = await verifyAgentToken(ctx.db, token);
    if (!verified)
      throw new TRPCError({ code: "UNAUTHORIZED", message: "Agent token is not valid." });
    const agent: AgentIdentity = { vmId: verified.vmId, credentialId: verified.credentialId };
    const raw = (await getRawInput()) as { vmId?: unknown } | undefined;
    if (raw && typeof raw === "object" && raw.vmId !== undefined && raw.vmId !== agent.vmId) {
      throw new TRPCError({ code: "FORBIDDEN", message: "This token belongs to a different VM." });
    }
    const actor: Actor = { kind: "agent", id: agent.vmId, ip: ctx.ip };
    // The VM row read with the token (same statement): a heartbeat needs nothing else.
    return next({ ctx: { agent, actor, agentVm: verified.vm } });
  });

/**
 * Bring-your-own machines enroll with an enrollment token (`Authorization: Bearer lle_...`), checked
 * here without spending it; the procedure spends one use in the same transaction that creates the
 * VM. Limited per client IP.
 */
export const enrollmentProcedure = base
  .meta({ tier: "enrollment" })
  .use(async ({ ctx, next }) => {
    const header = ctx.headers.get("authorization");
    const token = bearerToken(header);
    if (!token || !looksLikeEnrollmentToken(token)) {
      throw new TRPCError({
        code: "UNAUTHORIZED",
        message: "Enrollment token missing. Use `Authorization: Bearer <enrollment token>`.",
      });
    }
    return next();
  })
  .use(rateLimit("enroll", "ip"))
  .use(async ({ ctx, next }) => {
    const token = bearerToken(ctx.headers.get("authorization")) ?? "";
    const enrollmentTokenId = await verifyEnrollmentToken(ctx.db, token);
    if (!enrollmentTokenId) {
      throw new TRPCError({
        code: "UNAUTHORIZED",
        message:
          "This enrollment token is not valid: unknown, used up, expired or revoked. Ask your admin for a new one.",
      });
    }
    const actor: Actor = { kind: "agent", id: null, ip: ctx.ip };
    return next({ ctx: { enrollmentTokenId, actor } });
  });
