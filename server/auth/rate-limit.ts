import { sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { DomainError } from "../domain/errors";

export type RateRule = { limit: number; windowS: number };

/**
 * Default limits. Fixed windows in Postgres (`rate_limits`), shared by every web process: a
 * caller gets at most `limit` calls per window, so up to 2 × limit across a window boundary.
 */
export const DEFAULT_RATE_LIMITS = {
  /** Sign-in attempts (form posts and email-link requests) per client IP. */
  signIn: { limit: 10, windowS: 60 },
  /** Claims per researcher; a claim that rejoins the held VM counts too. */
  claim: { limit: 20, windowS: 60 },
  /** Enrollment attempts per client IP (each valid one creates a VM). */
  enroll: { limit: 10, windowS: 60 },
} satisfies Record<string, RateRule>;

export type RateLimits = typeof DEFAULT_RATE_LIMITS;

/** Counts one call against `key`; says whether it is allowed and, if not, when to retry. */
export async function hitRateLimit(
  db: DbOrTx,
  key: string,
  rule: RateRule,
): Promise<{ allowed: boolean; retryAfterS: number }> {
  const w = rule.windowS;
  const rows = await db.execute<{ count: number; retry_after: number }>(sql`
    INSERT INTO rate_limits AS r (key, window_start, count)
    VALUES (${key}, to_timestamp(floor(extract(epoch FROM now()) / ${w}) * ${w}), 1)
    ON CONFLICT (key) DO UPDATE SET
      count = CASE WHEN r.window_start = excluded.window_start THEN r.count + 1 ELSE 1 END,
      window_start = excluded.window_start
    RETURNING count,
      greatest(1, ceil(extract(epoch FROM (window_start + make_interval(secs => ${w}) - now()))))::int
        AS retry_after`);
  const row = rows[0];
  if (!row) throw new Error("rate limit upsert returned nothing");
  return { allowed: row.count <= rule.limit, retryAfterS: row.retry_after };
}

/** Throws RATE_LIMITED (429 with Retry-After) when `key` is over its limit. */
export async function enforceRateLimit(db: DbOrTx, key: string, rule: RateRule): Promise<void> {
  const r = await hitRateLimit(db, key, rule);
  if (!r.allowed) {
    throw new DomainError(
      "RATE_LIMITED",
      `Too many attempts. Try again in ${r.retryAfterS} second${r.retryAfterS === 1 ? "" : "s"}.`,
      { retryAfterS: r.retryAfterS },
    );
  }
}

/**
 * For `/api/auth` POSTs that start a sign-in (email link requests, OIDC/GitHub redirects): a 429
 * response with Retry-After once the client IP is over its limit, else null.
 */
export async function signInThrottle(
  db: DbOrTx,
  req: Request,
  ip: string | null,
  rule: RateRule = DEFAULT_RATE_LIMITS.signIn,
): Promise<Response | null> {
  if (req.method !== "POST" || !new URL(req.url).pathname.startsWith("/api/auth/signin/")) {
    return null;
  }
  const r = await hitRateLimit(db, `signIn:ip:${ip ?? "unknown"}`, rule);
  if (r.allowed) return null;
  return new Response("Too many sign-in attempts. Wait a minute and try again.\n", {
    status: 429,
    headers: { "retry-after": String(r.retryAfterS), "content-type": "text/plain" },
  });
}
