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
 * Auth.js for the Next app; the configuration itself is in ./options.ts. Auth.js builds the URLs
 * it hands out (email links, OAuth redirect URIs) from X-Forwarded-Host/-Proto, which the edge
 * sets from LABLINK_PUBLIC_URL (server/http.ts), never from a client's Host header. (Not AUTH_URL:
 * next-auth then re-parses requests as NextRequest, which turns 127.0.0.1 into localhost.)
 */
export const { handlers, auth, signIn, signOut } = NextAuth((req) =>
  buildAuthConfig({
    db: getDb(),
    env: env(),
    mailer: getMailer(),
    clientIp: req ? clientIp(req.headers) : null,
  }),
);
