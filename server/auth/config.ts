import NextAuth from "next-auth";
import { getDb } from "../db/client";
import { env } from "../env";
import { clientIp } from "../http";
import { createMailer, type Mailer } from "../mail";
import { buildAuthConfig } from "./options";

declare module "next-auth" {
  interface User {
    role?: "researcher" | "admin";
  }
  interface Session {
    user: {
      id: string;
      name?: string | null;
      email?: string | null;
      role?: "researcher" | "admin";
    };
  }
}

let mailer: Mailer | null | undefined;

/** The SMTP transport for sign-in links, or null when LABLINK_SMTP_URL is not set. */
export function getMailer(): Mailer | null {
  if (mailer === undefined) {
    const url = env().LABLINK_SMTP_URL;
    mailer = createMailer(url);
  }
  return mailer;
}

/**
 * Auth.js builds every URL it hands out (email sign-in links, OAuth redirect URIs, server-action
 * sign-ins) from AUTH_URL when it is set, else from the request's X-Forwarded-Host or Host header,
 * which a client chooses. It reads AUTH_URL from process.env only, so the public URL goes there
 * before each use (config validation requires LABLINK_PUBLIC_URL wherever links are mailed).
 */
export function pinAuthUrl(publicUrl: string | undefined): void {
  if (publicUrl) process.env.AUTH_URL = publicUrl;
}

/** Auth.js for the Next app; the configuration itself is in ./options.ts. */
export const { handlers, auth, signIn, signOut } = NextAuth((req) => {
  const e = env();
  pinAuthUrl(e.LABLINK_PUBLIC_URL);
  return buildAuthConfig({
    db: getDb(),
    env: e,
    mailer: getMailer(),
    clientIp: req ? clientIp(req.headers) : null,
  });
});
