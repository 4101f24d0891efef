import { generateKeyPairSync } from "node:crypto";

/** Test helper: real keys in OpenSSH `authorized_keys` format, made with node:crypto. */
const str = (b: Buffer) => {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
};
const mpint = (b: Buffer) =>
  str(b[0] !== undefined && b[0] & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
const b64u = (s: string | undefined) => Buffer.from(s ?? "", "base64url");

export function sshKey(kind: "ed25519" | "rsa2048" | "rsa3072" | "p256" | "p384" | "p521"): string {
  if (kind === "ed25519") {
    const jwk = generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" });
    const blob = Buffer.concat([str(Buffer.from("ssh-ed25519")), str(b64u(jwk.x))]);
    return `ssh-ed25519 ${blob.toString("base64")}`;
  }
  if (kind === "rsa2048" || kind === "rsa3072") {
    const bits = kind === "rsa2048" ? 2048 : 3072;
    const jwk = generateKeyPairSync("rsa", { modulusLength: bits }).publicKey.export({
      format: "jwk",
    });
    const blob = Buffer.concat([
      str(Buffer.from("ssh-rsa")),
      mpint(b64u(jwk.e)),
      mpint(b64u(jwk.n)),
    ]);
    return `ssh-rsa ${blob.toString("base64")}`;
  }
  const curve = {
    p256: ["prime256v1", "nistp256"],
    p384: ["secp384r1", "nistp384"],
    p521: ["secp521r1", "nistp521"],
  }[kind];
  const jwk = generateKeyPairSync("ec", { namedCurve: curve[0] as string }).publicKey.export({
    format: "jwk",
  });
  const type = `ecdsa-sha2-${curve[1]}`;
  const q = Buffer.concat([Buffer.from([4]), b64u(jwk.x), b64u(jwk.y)]);
  const blob = Buffer.concat([
    str(Buffer.from(type)),
    str(Buffer.from(curve[1] as string)),
    str(q),
  ]);
  return `${type} ${blob.toString("base64")}`;
}
