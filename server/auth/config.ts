import NextAuth from "next-auth";
import { clientIp } from "../api/handler";
import { getDb } from "../db/client";
import { env } from "../env";
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

/** Auth.js for the Next app; the configuration itself is in ./options.ts. */
export const { handlers, auth, signIn, signOut } = NextAuth((req) =>
  buildAuthConfig({
    db: getDb(),
    env: env(),
    mailer: getMailer(),
    clientIp: req ? clientIp(req.headers) : null,
  }),
);
