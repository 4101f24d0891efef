import NextAuth from "next-auth";
import Credentials from "next-auth/providers/credentials";
import { getDb } from "../db/client";
import { env } from "../env";
import { logger } from "../log";
import { devLoginInput, devSignIn, isLoopbackRequest } from "./dev-login";

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

/**
 * Auth.js. Sessions are JWTs carrying the user id (and the role for display only: every
 * server-side check re-reads the role from the database). Providers beyond development sign-in
 * arrive with the identity issue.
 */
export const { handlers, auth, signIn, signOut } = NextAuth(() => {
  const e = env();
  return {
    secret: e.AUTH_SECRET,
    trustHost: true,
    session: { strategy: "jwt", maxAge: 12 * 60 * 60 },
    pages: { signIn: "/signin" },
    providers: e.LABLINK_DEV_LOGIN
      ? [
          Credentials({
            id: "dev",
            name: "Development sign-in",
            credentials: { name: { label: "Name" }, role: { label: "Role" } },
            async authorize(credentials, request) {
              if (!env().LABLINK_DEV_LOGIN || !isLoopbackRequest(request.headers)) {
                logger.warn("development sign-in refused: not a loopback request");
                return null;
              }
              const parsed = devLoginInput.safeParse({
                name: credentials?.name,
                role: credentials?.role,
              });
              if (!parsed.success) return null;
              return devSignIn(getDb(), parsed.data);
            },
          }),
        ]
      : [],
    callbacks: {
      jwt({ token, user }) {
        if (user?.id) {
          token.sub = user.id;
          token.role = user.role;
        }
        return token;
      },
      session({ session, token }) {
        if (token.sub) {
          session.user.id = token.sub;
          session.user.role = token.role as "researcher" | "admin" | undefined;
        }
        return session;
      },
    },
  };
});
