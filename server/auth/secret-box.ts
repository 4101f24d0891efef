import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { env } from "../env";

/**
 * Seals short-lived secrets at rest (remote-desktop setup codes and PINs) with AES-256-GCM under a
 * key derived from AUTH_SECRET, so a database dump or an admin's SQL console does not show them.
 * Without AUTH_SECRET (tests) the key is random per process: sealed values then live only as long
 * as the process, which is acceptable for secrets meant to be used within minutes.
 */
let key: Buffer | undefined;

function sealingKey(): Buffer {
  if (!key) {
    const secret = env().AUTH_SECRET;
    const ikm = secret ? Buffer.from(secret, "utf8") : randomBytes(32);
    key = Buffer.from(hkdfSync("sha256", ikm, "lablink", "lablink secret-box v1", 32));
  }
  return key;
}

/** "v1.<iv>.<tag>.<ciphertext>", base64url parts. */
export function seal(plaintext: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", sealingKey(), iv);
  const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
  return ["v1", iv, cipher.getAuthTag(), body]
    .map((p) => (typeof p === "string" ? p : p.toString("base64url")))
    .join(".");
}

/** The plaintext, or null when the value was sealed under another key or tampered with. */
export function unseal(sealed: string): string | null {
  const [version, iv, tag, body] = sealed.split(".");
  if (version !== "v1" || !iv || !tag || body === undefined) return null;
  try {
    const decipher = createDecipheriv("aes-256-gcm", sealingKey(), Buffer.from(iv, "base64url"));
    decipher.setAuthTag(Buffer.from(tag, "base64url"));
    return Buffer.concat([
      decipher.update(Buffer.from(body, "base64url")),
      decipher.final(),
    ]).toString("utf8");
  } catch {
    return null;
  }
}
