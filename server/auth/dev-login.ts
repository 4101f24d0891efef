import { eq, sql } from "drizzle-orm";
import { z } from "zod";
import type { DbOrTx } from "../db/client";
import { type UserRole, users } from "../db/schema";
import { audit } from "../domain/audit";
import { isLoopbackHost } from "../env";

export const devLoginInput = z.strictObject({
  name: z
    .string()
    .trim()
    .min(1, "Enter a name")
    .max(40)
    .regex(/^[A-Za-z0-9 ._-]+$/, "Letters, digits, spaces, dots, dashes and underscores only"),
  role: z.enum(["researcher", "admin"]),
});

/**
 * Development sign-in is decided by the socket, never by a header a client can write: the peer
 * must be a loopback address (set by server/http.ts from the socket), the Host a loopback name
 * (a DNS-rebinding page reaches 127.0.0.1 with its own host name), and the request must have
 * arrived without any forwarding header (a proxy on the same host has a loopback peer too).
 */
export function isLoopbackRequest(headers: Headers): boolean {
  if (headers.get("x-lablink-forwarded")) return false;
  const peer = headers.get("x-lablink-peer") ?? "";
  if (!isLoopbackAddress(peer)) return false;
  const host = headers.get("host") ?? "";
  const hostname = host.startsWith("[")
    ? host.slice(0, host.indexOf("]") + 1)
    : (host.split(":")[0] ?? "");
  return isLoopbackHost(hostname);
}

function isLoopbackAddress(ip: string): boolean {
  return ip === "::1" || /^127\.\d+\.\d+\.\d+$/.test(ip);
}

/**
 * Development sign-in: finds or creates `<name>@dev.lablink.local` with the chosen role. Never
 * reachable in production: config validation refuses LABLINK_DEV_LOGIN with an external URL or
 * a non-loopback listen address, and this refuses non-loopback requests.
 */
export async function devSignIn(
  db: DbOrTx,
  input: { name: string; role: UserRole },
  ip: string | null = null,
): Promise<{ id: string; name: string | null; email: string | null; role: UserRole }> {
  const slug =
    input.name
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "-")
      .replace(/^-|-$/g, "") || "user";
  const email = `${slug}@dev.lablink.local`;
  const [user] = await db
    .insert(users)
    .values({ name: input.name, email, role: input.role, emailVerified: new Date() })
    .onConflictDoUpdate({
      target: users.email,
      set: { role: input.role, name: sql`excluded.name` },
    })
    .returning({ id: users.id, name: users.name, email: users.email, role: users.role });
  if (!user) throw new Error("dev sign-in upsert returned nothing");
  await audit(
    db,
    { kind: "user", id: user.id, ip },
    "auth.sign_in",
    { kind: "user", id: user.id },
    { provider: "dev", role: user.role },
  );
  return user;
}

export async function userRole(db: DbOrTx, id: string): Promise<UserRole | null> {
  const [u] = await db.select({ role: users.role }).from(users).where(eq(users.id, id));
  return u?.role ?? null;
}
