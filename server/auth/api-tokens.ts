import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { and, desc, eq, isNull, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { type ApiTokenScope, apiTokens, type UserRole, users } from "../db/schema";
import { audit } from "../domain/audit";
import { DomainError } from "../domain/errors";
import type { Actor } from "../domain/vm-state";
import { bearerToken } from "./agent-tokens";

/**
 * Personal API tokens: `llk_<token id>_<32 random bytes, base64url>`, like agent (`lla_`) and
 * enrollment (`lle_`) tokens: the id finds the row, only SHA-256 of the secret is stored, and the
 * comparison is constant-time.
 */
const TOKEN_RE = /^llk_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$/;
const sha256 = (s: string) => createHash("sha256").update(s).digest();
const toUuid = (hex: string) =>
  `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;

/** Longest life a token may be given: a year, so a forgotten token does not work forever. */
export const MAX_API_TOKEN_DAYS = 365;
/** How stale `last_used_at` may get: one write per token per minute at most. */
const LAST_USED_RESOLUTION_S = 60;

/** A bearer header that claims to be an API token (`llk_...`), well-formed or not. */
export function presentedApiToken(headers: Headers): string | null {
  const token = bearerToken(headers.get("authorization"));
  return token?.startsWith("llk_") ? token : null;
}

/** Creates a token for an admin. The token is in the answer only; LabLink keeps its hash. */
export async function createApiToken(
  db: DbOrTx,
  req: { userId: string; name: string; scope: ApiTokenScope; expiresInDays: number; actor: Actor },
): Promise<{ id: string; token: string; name: string; scope: ApiTokenScope; expiresAt: Date }> {
  return db.transaction(async (tx) => {
    const secret = randomBytes(32).toString("base64url");
    const [row] = await tx
      .insert(apiTokens)
      .values({
        userId: req.userId,
        name: req.name,
        scope: req.scope,
        tokenHash: sha256(secret).toString("hex"),
        expiresAt: sql`now() + make_interval(days => ${req.expiresInDays})`,
      })
      .returning({
        id: apiTokens.id,
        name: apiTokens.name,
        scope: apiTokens.scope,
        expiresAt: apiTokens.expiresAt,
      });
    if (!row) throw new Error("api token insert returned nothing");
    await audit(
      tx,
      req.actor,
      "api_token.create",
      { kind: "api_token", id: row.id },
      { name: row.name, scope: row.scope, expiresAt: row.expiresAt },
    );
    return { ...row, token: `llk_${row.id.replaceAll("-", "")}_${secret}` };
  });
}

/** A user's tokens, newest first, with when each was last used (never the secret or its hash). */
export async function listApiTokens(db: DbOrTx, userId: string) {
  const rows = await db
    .select({
      id: apiTokens.id,
      name: apiTokens.name,
      scope: apiTokens.scope,
      createdAt: apiTokens.createdAt,
      expiresAt: apiTokens.expiresAt,
      lastUsedAt: apiTokens.lastUsedAt,
      revokedAt: apiTokens.revokedAt,
      expired: sql<boolean>`${apiTokens.expiresAt} <= now()`,
    })
    .from(apiTokens)
    .where(eq(apiTokens.userId, userId))
    .orderBy(desc(apiTokens.createdAt), desc(apiTokens.id));
  return rows.map(({ expired, ...r }) => ({
    ...r,
    status: r.revokedAt
      ? ("revoked" as const)
      : expired
        ? ("expired" as const)
        : ("active" as const),
  }));
}

/** Revokes one of the user's own tokens at once. Revoking a revoked token changes nothing. */
export async function revokeApiToken(
  db: DbOrTx,
  req: { userId: string; id: string; actor: Actor },
): Promise<{ id: string; revokedAt: Date }> {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .update(apiTokens)
      .set({ revokedAt: sql`now()` })
      .where(
        and(
          eq(apiTokens.id, req.id),
          eq(apiTokens.userId, req.userId),
          isNull(apiTokens.revokedAt),
        ),
      )
      .returning({ id: apiTokens.id, revokedAt: apiTokens.revokedAt, name: apiTokens.name });
    if (row?.revokedAt) {
      await audit(
        tx,
        req.actor,
        "api_token.revoke",
        { kind: "api_token", id: row.id },
        {
          name: row.name,
        },
      );
      return { id: row.id, revokedAt: row.revokedAt };
    }
    const [existing] = await tx
      .select({ id: apiTokens.id, revokedAt: apiTokens.revokedAt })
      .from(apiTokens)
      .where(and(eq(apiTokens.id, req.id), eq(apiTokens.userId, req.userId)));
    if (!existing?.revokedAt) throw new DomainError("NOT_FOUND", "No such API token.");
    return { id: existing.id, revokedAt: existing.revokedAt };
  });
}

export type ApiTokenCaller = {
  tokenId: string;
  scope: ApiTokenScope;
  user: { id: string; role: UserRole; name: string | null; email: string | null };
};

/**
 * Who a presented `llk_` token acts for, with the owner's role as of now, or why it does not
 * work. Revocation, expiry and the owner's role are read on every call, so each takes effect at
 * once. A token works only while its owner is an admin (only admins can create them).
 */
export async function verifyApiToken(
  db: DbOrTx,
  token: string,
): Promise<{ ok: true; caller: ApiTokenCaller } | { ok: false; reason: string }> {
  const invalid = { ok: false as const, reason: "This API token is not valid." };
  const m = TOKEN_RE.exec(token);
  if (!m?.[1] || !m[2]) return invalid;
  const id = toUuid(m[1]);
  const [row] = await db
    .select({
      tokenHash: apiTokens.tokenHash,
      scope: apiTokens.scope,
      revoked: sql<boolean>`${apiTokens.revokedAt} IS NOT NULL`,
      expired: sql<boolean>`${apiTokens.expiresAt} <= now()`,
      stale: sql<boolean>`${apiTokens.lastUsedAt} IS NULL OR ${apiTokens.lastUsedAt} < now() - make_interval(secs => ${LAST_USED_RESOLUTION_S})`,
      user: { id: users.id, role: users.role, name: users.name, email: users.email },
    })
    .from(apiTokens)
    .innerJoin(users, eq(users.id, apiTokens.userId))
    .where(eq(apiTokens.id, id));
  // Hash even when the row is missing, so both paths take the same time.
  const presented = sha256(m[2]);
  const stored = row ? Buffer.from(row.tokenHash, "hex") : Buffer.alloc(32);
  const match = stored.length === presented.length && timingSafeEqual(stored, presented);
  if (!row || !match) return invalid;
  if (row.revoked) return { ok: false, reason: "This API token has been revoked." };
  if (row.expired) return { ok: false, reason: "This API token has expired; create a new one." };
  if (row.user.role !== "admin") {
    return { ok: false, reason: "This API token's owner is no longer an admin." };
  }
  if (row.stale) {
    // The guard repeats the staleness test, so concurrent calls write at most once.
    await db
      .update(apiTokens)
      .set({ lastUsedAt: sql`now()` })
      .where(
        and(
          eq(apiTokens.id, id),
          sql`(${apiTokens.lastUsedAt} IS NULL OR ${apiTokens.lastUsedAt} < now() - make_interval(secs => ${LAST_USED_RESOLUTION_S}))`,
        ),
      );
  }
  return { ok: true, caller: { tokenId: id, scope: row.scope, user: row.user } };
}
