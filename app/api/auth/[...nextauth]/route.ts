import type { NextRequest } from "next/server";
import { handlers } from "@/server/auth/config";
import { signInThrottle } from "@/server/auth/rate-limit";
import { getDb } from "@/server/db/client";
import { env } from "@/server/env";
import { clientIp } from "@/server/http";

/**
 * Auth.js builds OAuth redirect URIs from the request URL, which Next gives as its own listen
 * address (and NextRequest rewrites 127.0.0.1 to localhost), while the sign-in that started the
 * flow used the host the browser sees. Rebuild the URL from LABLINK_PUBLIC_URL, else the host
 * the browser used, so both legs of an OIDC flow name the same redirect URI. X-Forwarded-Host and
 * -Proto reach this point only from a trusted proxy or the public URL (server/http.ts drops
 * others; Next then sets them from the Host header and the socket).
 */
async function withPublicOrigin(req: NextRequest): Promise<NextRequest> {
  const e = env();
  const host = req.headers.get("x-forwarded-host") || req.headers.get("host");
  const proto = req.headers.get("x-forwarded-proto") || "http";
  const origin = e.LABLINK_PUBLIC_URL ?? (host ? `${proto}://${host}` : null);
  if (!origin) return req;
  const url = new URL(`${req.nextUrl.pathname}${req.nextUrl.search}`, origin);
  const body = req.method === "POST" ? await req.arrayBuffer() : undefined;
  // A plain Request: NextRequest would turn 127.0.0.1 into localhost. next-auth reads only url,
  // method, headers and body (and nextUrl only when AUTH_URL is set, which LabLink never does).
  return new Request(url, { method: req.method, headers: req.headers, body }) as NextRequest;
}

export async function GET(req: NextRequest) {
  return handlers.GET(await withPublicOrigin(req));
}

export async function POST(req: NextRequest) {
  return (
    (await signInThrottle(getDb(), req, clientIp(req.headers))) ??
    handlers.POST(await withPublicOrigin(req))
  );
}
