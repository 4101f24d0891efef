import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { and, desc, eq, gt, isNull, lt, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { enrollmentTokens, fleets } from "../db/schema";
import { audit } from "../domain/audit";
import { createEnrolledVm } from "../domain/convergence";
import { DomainError } from "../domain/errors";
import type { Actor } from "../domain/vm-state";

/**
 * Enrollment tokens for bring-your-own machines: `lle_<token id>_<32 random bytes, base64url>`.
 * Like agent tokens, the id finds the row and only SHA-256 of the secret is stored.
 */
const TOKEN_RE = /^lle_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$/;
const sha256 = (s: string) => createHash("sha256").update(s).digest();
const toUuid = (hex: string) =>
  `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;

export function looksLikeEnrollmentToken(token: string): boolean {
  return TOKEN_RE.test(token);
}

/** Creates a token for a `byo` fleet. The token is returned once and never stored. */
export async function createEnrollmentToken(
  db: DbOrTx,
  req: { fleetId: string; maxUses: number; expiresInS: number; label?: string; actor: Actor },
): Promise<{ id: string; token: string; expiresAt: Date; maxUses: number }> {
  return db.transaction(async (tx) => {
    const [fleet] = await tx
      .select({ driver: fleets.driver })
      .from(fleets)
      .where(eq(fleets.id, req.fleetId));
    if (!fleet) throw new DomainError("NOT_FOUND", "No such fleet.");
    if (fleet.driver !== "byo") {
      throw new DomainError(
        "INVALID_INPUT",
        "Enrollment tokens are for bring-your-own fleets; this fleet's machines are created by LabLink.",
      );
    }
    const secret = randomBytes(32).toString("base64url");
    const [row] = await tx
      .insert(enrollmentTokens)
      .values({
        fleetId: req.fleetId,
        label: req.label ?? null,
        tokenHash: sha256(secret).toString("hex"),
        maxUses: req.maxUses,
        expiresAt: sql`now() + make_interval(secs => ${req.expiresInS})`,
        createdBy: req.actor.kind === "user" ? req.actor.id : null,
      })
      .returning({
        id: enrollmentTokens.id,
        expiresAt: enrollmentTokens.expiresAt,
        maxUses: enrollmentTokens.maxUses,
      });
    if (!row) throw new Error("enrollment token insert returned nothing");
    await audit(
      tx,
      req.actor,
      "enrollment.create",
      { kind: "enrollment_token", id: row.id },
      { fleetId: req.fleetId, maxUses: req.maxUses, expiresAt: row.expiresAt },
    );
    return { ...row, token: `lle_${row.id.replaceAll("-", "")}_${secret}` };
  });
}

/** Enrollment tokens of a fleet (or all), without secrets. */
export async function listEnrollmentTokens(db: DbOrTx, fleetId?: string) {
  return db
    .select({
      id: enrollmentTokens.id,
      fleetId: enrollmentTokens.fleetId,
      label: enrollmentTokens.label,
      maxUses: enrollmentTokens.maxUses,
      uses: enrollmentTokens.uses,
      expiresAt: enrollmentTokens.expiresAt,
      revokedAt: enrollmentTokens.revokedAt,
      createdAt: enrollmentTokens.createdAt,
      usable: sql<boolean>`${enrollmentTokens.revokedAt} IS NULL AND ${enrollmentTokens.expiresAt} > now() AND ${enrollmentTokens.uses} < ${enrollmentTokens.maxUses}`,
    })
    .from(enrollmentTokens)
    .where(fleetId ? eq(enrollmentTokens.fleetId, fleetId) : undefined)
    .orderBy(desc(enrollmentTokens.createdAt));
}

export async function revokeEnrollmentToken(db: DbOrTx, req: { id: string; actor: Actor }) {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .update(enrollmentTokens)
      .set({ revokedAt: sql`coalesce(${enrollmentTokens.revokedAt}, now())` })
      .where(eq(enrollmentTokens.id, req.id))
      .returning({ id: enrollmentTokens.id });
    if (!row) throw new DomainError("NOT_FOUND", "No such enrollment token.");
    await audit(tx, req.actor, "enrollment.revoke", { kind: "enrollment_token", id: row.id });
    return { id: row.id };
  });
}

/**
 * Checks an enrollment token without spending it: the row exists, the secret matches (constant
 * time), and it is neither revoked, expired nor used up. Returns the token id, or null.
 */
export async function verifyEnrollmentToken(db: DbOrTx, token: string): Promise<string | null> {
  const m = TOKEN_RE.exec(token);
  if (!m?.[1] || !m[2]) return null;
  const id = toUuid(m[1]);
  const [row] = await db
    .select({ tokenHash: enrollmentTokens.tokenHash })
    .from(enrollmentTokens)
    .where(
      and(
        eq(enrollmentTokens.id, id),
        isNull(enrollmentTokens.revokedAt),
        gt(enrollmentTokens.expiresAt, sql`now()`),
        lt(enrollmentTokens.uses, enrollmentTokens.maxUses),
      ),
    );
  const presented = sha256(m[2]);
  const stored = row ? Buffer.from(row.tokenHash, "hex") : Buffer.alloc(32);
  return row && timingSafeEqual(stored, presented) ? id : null;
}

/**
 * Spends one use of a verified enrollment token and creates the machine's VM record and its own
 * agent token, all in one transaction: a token spent is a VM created, and the last use cannot be
 * spent twice (the guarded UPDATE re-checks every condition).
 */
export async function enrollMachine(
  db: DbOrTx,
  req: { tokenId: string; hostname: string; actor: Actor },
): Promise<{ vmId: string; name: string; token: string }> {
  return db.transaction(async (tx) => {
    const [spent] = await tx
      .update(enrollmentTokens)
      .set({ uses: sql`${enrollmentTokens.uses} + 1` })
      .where(
        and(
          eq(enrollmentTokens.id, req.tokenId),
          isNull(enrollmentTokens.revokedAt),
          gt(enrollmentTokens.expiresAt, sql`now()`),
          lt(enrollmentTokens.uses, enrollmentTokens.maxUses),
        ),
      )
      .returning({ fleetId: enrollmentTokens.fleetId });
    if (!spent) {
      throw new DomainError(
        "UNAUTHORIZED",
        "This enrollment token is used up, expired or revoked. Ask your admin for a new one.",
      );
    }
    const { vm, token } = await createEnrolledVm(tx, {
      fleetId: spent.fleetId,
      hostname: req.hostname,
    });
    await audit(
      tx,
      req.actor,
      "agent.enroll",
      { kind: "vm", id: vm.id },
      { enrollmentTokenId: req.tokenId, fleetId: spent.fleetId, hostname: req.hostname },
    );
    return { vmId: vm.id, name: vm.name, token };
  });
}

/**
 * Fits a byo fleet's open enrollment (unspent uses of its usable tokens) to the machines it still
 * misses: a new token for the shortfall, or the surplus retired, newest tokens first (a token cut
 * to its spent uses is revoked). Spent uses are never taken back: those machines are enrolled.
 * The new token, if any, is in this answer only.
 */
export async function fitEnrollmentTokens(
  db: DbOrTx,
  req: { fleetId: string; missing: number; expiresInS: number; actor: Actor },
): Promise<{
  created: { id: string; token: string; expiresAt: Date; maxUses: number } | null;
  retired: number;
  open: number;
}> {
  return db.transaction(async (tx) => {
    const usable = await tx
      .select({
        id: enrollmentTokens.id,
        maxUses: enrollmentTokens.maxUses,
        uses: enrollmentTokens.uses,
      })
      .from(enrollmentTokens)
      .where(
        and(
          eq(enrollmentTokens.fleetId, req.fleetId),
          isNull(enrollmentTokens.revokedAt),
          gt(enrollmentTokens.expiresAt, sql`now()`),
          lt(enrollmentTokens.uses, enrollmentTokens.maxUses),
        ),
      )
      .orderBy(desc(enrollmentTokens.createdAt), desc(enrollmentTokens.id))
      .for("update");
    const open = usable.reduce((n, t) => n + t.maxUses - t.uses, 0);
    if (req.missing > open) {
      const created = await createEnrollmentToken(tx, {
        fleetId: req.fleetId,
        maxUses: req.missing - open,
        expiresInS: req.expiresInS,
        label: "fleet scale",
        actor: req.actor,
      });
      return { created, retired: 0, open: req.missing };
    }
    let surplus = open - req.missing;
    let retired = 0;
    for (const t of usable) {
      if (surplus === 0) break;
      const cut = Math.min(surplus, t.maxUses - t.uses);
      const maxUses = t.maxUses - cut;
      await tx
        .update(enrollmentTokens)
        .set({ maxUses, ...(maxUses === t.uses ? { revokedAt: sql`now()` } : {}) })
        .where(eq(enrollmentTokens.id, t.id));
      await audit(
        tx,
        req.actor,
        "enrollment.retire",
        { kind: "enrollment_token", id: t.id },
        { fleetId: req.fleetId, unusedUsesRetired: cut, maxUses },
      );
      surplus -= cut;
      retired += cut;
    }
    return { created: null, retired, open: req.missing };
  });
}

/** Revokes every enrollment token of a fleet (it is destroyed: no machine may join it). */
export async function revokeFleetEnrollmentTokens(db: DbOrTx, fleetId: string, actor: Actor) {
  const revoked = await db
    .update(enrollmentTokens)
    .set({ revokedAt: sql`now()` })
    .where(and(eq(enrollmentTokens.fleetId, fleetId), isNull(enrollmentTokens.revokedAt)))
    .returning({ id: enrollmentTokens.id });
  for (const t of revoked)
    await audit(
      db,
      actor,
      "enrollment.revoke",
      { kind: "enrollment_token", id: t.id },
      { fleetId },
    );
  return revoked.length;
}
