import { createHash, createPublicKey } from "node:crypto";
import { and, asc, count, eq, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { type SshKey, sshKeys } from "../db/schema";
import { DomainError } from "./errors";

/** How many keys one researcher may keep. */
export const MAX_SSH_KEYS = 10;
export const MIN_RSA_BITS = 3072;

export type ParsedSshKey = {
  algorithm: string;
  /** base64 of the wire-format blob, as in authorized_keys. */
  publicKey: string;
  fingerprint: string;
  bits: number;
  comment: string | null;
};

const CURVES: Record<string, { name: string; crv: string; bytes: number; bits: number }> = {
  "ecdsa-sha2-nistp256": { name: "nistp256", crv: "P-256", bytes: 32, bits: 256 },
  "ecdsa-sha2-nistp384": { name: "nistp384", crv: "P-384", bytes: 48, bits: 384 },
  "ecdsa-sha2-nistp521": { name: "nistp521", crv: "P-521", bytes: 66, bits: 521 },
};

const invalid = (message: string) => new DomainError("INVALID_INPUT", message);

/** Reads SSH wire-format strings (uint32 length + bytes) from a key blob. */
class WireReader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}

  string(): Buffer {
    if (this.at + 4 > this.buf.length) throw invalid("The key data is truncated.");
    const len = this.buf.readUInt32BE(this.at);
    this.at += 4;
    if (len > this.buf.length - this.at) throw invalid("The key data is truncated.");
    const out = this.buf.subarray(this.at, this.at + len);
    this.at += len;
    return out;
  }

  end(): void {
    if (this.at !== this.buf.length) throw invalid("The key data has trailing bytes.");
  }
}

/** An mpint without its sign byte, as unsigned big-endian. */
const unsigned = (mpint: Buffer) => {
  let i = 0;
  while (i < mpint.length - 1 && mpint[i] === 0) i++;
  return mpint.subarray(i);
};

const bitLength = (n: Buffer) =>
  n.length === 0 ? 0 : (n.length - 1) * 8 + (32 - Math.clz32(n[0] ?? 0));

/**
 * Parses one authorized_keys-style line "type base64 [comment]" and checks the key itself, not
 * just its prefix: the blob's own type must match, the point must be on the curve, an RSA modulus
 * must have at least 3072 bits. Options (`command=`, `from=`) and other key types are refused.
 */
export function parseSshPublicKey(text: string): ParsedSshKey {
  const line = text.trim();
  if (/[\r\n\0]/.test(line)) throw invalid("Paste one key, on one line.");
  const [type = "", b64 = "", ...rest] = line.split(/[ \t]+/);
  const comment = rest.join(" ").slice(0, 200) || null;
  if (!(type === "ssh-ed25519" || type === "ssh-rsa" || type in CURVES)) {
    throw invalid(
      "Unsupported key: use ssh-ed25519 (recommended), ecdsa-sha2-nistp256/384/521, or ssh-rsa with at least 3072 bits. Paste the .pub file, without options.",
    );
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) {
    throw invalid("The key data is not valid base64.");
  }
  const blob = Buffer.from(b64, "base64");
  if (blob.toString("base64") !== b64) throw invalid("The key data is not valid base64.");
  const r = new WireReader(blob);
  if (r.string().toString("latin1") !== type) {
    throw invalid("The key data does not match its type.");
  }

  let bits: number;
  try {
    if (type === "ssh-ed25519") {
      const pk = r.string();
      r.end();
      if (pk.length !== 32) throw invalid("An ed25519 key is 32 bytes.");
      createPublicKey({
        key: { kty: "OKP", crv: "Ed25519", x: pk.toString("base64url") },
        format: "jwk",
      });
      bits = 256;
    } else if (type === "ssh-rsa") {
      const e = unsigned(r.string());
      const n = unsigned(r.string());
      r.end();
      bits = bitLength(n);
      if (bits < MIN_RSA_BITS) {
        throw invalid(
          `This RSA key has ${bits} bits; at least ${MIN_RSA_BITS} are required (ssh-ed25519 is better).`,
        );
      }
      if (bits > 16384) throw invalid("RSA keys over 16384 bits are not accepted.");
      createPublicKey({
        key: { kty: "RSA", n: n.toString("base64url"), e: e.toString("base64url") },
        format: "jwk",
      });
    } else {
      const curve = CURVES[type] as (typeof CURVES)[string];
      if (r.string().toString("latin1") !== curve.name)
        throw invalid("The key's curve does not match its type.");
      const q = r.string();
      r.end();
      if (q.length !== 1 + 2 * curve.bytes || q[0] !== 4)
        throw invalid("The ECDSA point is malformed.");
      // Node refuses a point that is not on the curve.
      createPublicKey({
        key: {
          kty: "EC",
          crv: curve.crv,
          x: q.subarray(1, 1 + curve.bytes).toString("base64url"),
          y: q.subarray(1 + curve.bytes).toString("base64url"),
        },
        format: "jwk",
      });
      bits = curve.bits;
    }
  } catch (err) {
    if (err instanceof DomainError) throw err;
    throw invalid("This is not a valid public key.");
  }
  const fingerprint = `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
  return { algorithm: type, publicKey: b64, fingerprint, bits, comment };
}

const publicColumns = {
  id: sshKeys.id,
  label: sshKeys.label,
  algorithm: sshKeys.algorithm,
  fingerprint: sshKeys.fingerprint,
  bits: sshKeys.bits,
  createdAt: sshKeys.createdAt,
};

export function listSshKeys(db: DbOrTx, userId: string) {
  return db
    .select(publicColumns)
    .from(sshKeys)
    .where(eq(sshKeys.userId, userId))
    .orderBy(asc(sshKeys.createdAt));
}

export async function addSshKey(
  db: DbOrTx,
  req: { userId: string; publicKey: string; label?: string },
) {
  const key = parseSshPublicKey(req.publicKey);
  const label =
    (req.label ?? key.comment ?? key.algorithm)
      .replace(/[^\p{L}\p{N} ._@+-]/gu, "")
      .trim()
      .slice(0, 64) || key.algorithm;
  return db.transaction(async (tx) => {
    // Serialize a researcher's additions so the limit holds under concurrent requests.
    await tx.execute(sql`SELECT pg_advisory_xact_lock(hashtext('ssh_keys:' || ${req.userId}))`);
    const [{ n } = { n: 0 }] = await tx
      .select({ n: count() })
      .from(sshKeys)
      .where(eq(sshKeys.userId, req.userId));
    if (n >= MAX_SSH_KEYS) {
      throw new DomainError(
        "INVALID_INPUT",
        `You can keep at most ${MAX_SSH_KEYS} SSH keys; remove one first.`,
      );
    }
    const [row] = await tx
      .insert(sshKeys)
      .values({
        userId: req.userId,
        label,
        algorithm: key.algorithm,
        publicKey: key.publicKey,
        fingerprint: key.fingerprint,
        bits: key.bits,
      })
      .onConflictDoNothing()
      .returning(publicColumns);
    if (!row)
      throw new DomainError("ALREADY_EXISTS", "You already added this key.", {
        fingerprint: key.fingerprint,
      });
    return row;
  });
}

export async function removeSshKey(db: DbOrTx, req: { userId: string; id: string }) {
  const removed = await db
    .delete(sshKeys)
    .where(and(eq(sshKeys.id, req.id), eq(sshKeys.userId, req.userId)))
    .returning({ id: sshKeys.id });
  if (removed.length === 0) throw new DomainError("NOT_FOUND", "You have no such SSH key.");
  return { id: req.id };
}

/** The holder's keys as authorized_keys lines ("type base64"), for the assign command. */
export async function keyLinesFor(db: DbOrTx, userId: string): Promise<string[]> {
  const rows: Pick<SshKey, "algorithm" | "publicKey">[] = await db
    .select({ algorithm: sshKeys.algorithm, publicKey: sshKeys.publicKey })
    .from(sshKeys)
    .where(eq(sshKeys.userId, userId))
    .orderBy(asc(sshKeys.createdAt));
  return rows.map((k) => `${k.algorithm} ${k.publicKey}`);
}
