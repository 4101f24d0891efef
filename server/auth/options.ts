import { DrizzleAdapter } from "@auth/drizzle-adapter";
import type { NextAuthConfig } from "next-auth";
import Credentials from "next-auth/providers/credentials";
import GitHub from "next-auth/providers/github";
import type { Db } from "../db/client";
import { accounts, sessions, type UserRole, users, verificationTokens } from "../db/schema";
import { audit } from "../domain/audit";
import { applyAdminBootstrap, emailAllowed, parseEmailList } from "../domain/users";
import type { Env } from "../env";
import { clientIp } from "../http";
import { logger } from "../log";
import type { Mailer } from "../mail";
import { devLoginInput, devSignIn, isLoopbackRequest, userRole } from "./dev-login";

export type AuthDeps = {
  db: Db;
  env: Env;
  /** Required for email links; built from LABLINK_SMTP_URL in the app. */
  mailer?: Mailer | null;
  /** The requesting client's IP, for the sign-in audit row. */
  clientIp?: string | null;
};

/** Sign-in links work once, for 10 minutes. */
export const EMAIL_LINK_MAX_AGE_S = 10 * 60;

export const NOT_ALLOWED_PATH = "/signin/not-allowed";

type GitHubEmail = { email: string; primary: boolean; verified: boolean };

/** The address a GitHub user signs in with: the primary if verified, else any verified one. */
export function verifiedGitHubEmail(emails: readonly GitHubEmail[] | null): string | null {
  const verified = (emails ?? []).filter((m) => m.verified);
  return (verified.find((m) => m.primary) ?? verified[0])?.email ?? null;
}

/** Which sign-in options are configured, for the sign-in page. */
export function signInOptions(e: Env, mailerConfigured = Boolean(e.LABLINK_SMTP_URL)) {
  return {
    dev: e.LABLINK_DEV_LOGIN,
    email: mailerConfigured && Boolean(e.LABLINK_EMAIL_FROM),
    oidc: e.LABLINK_OIDC_ISSUER ? { id: "oidc", name: e.LABLINK_OIDC_NAME } : null,
    github: Boolean(e.AUTH_GITHUB_ID),
  };
}

/**
 * The Auth.js configuration: development sign-in (loopback only), email links, a generic OIDC
 * provider and GitHub, each enabled by configuration. Users, accounts and verification tokens live
 * in Postgres (Drizzle adapter); sessions are JWTs carrying the user id, and every server-side
 * check re-reads the role from the database.
 */
export function buildAuthConfig(deps: AuthDeps): NextAuthConfig {
  const { db, env: e } = deps;
  const adminEmails = parseEmailList(e.LABLINK_ADMIN_EMAILS);
  const allowList = parseEmailList(e.LABLINK_ALLOWED_EMAILS);
  const options = signInOptions(e, Boolean(deps.mailer));
  const providers: NextAuthConfig["providers"] = [];

  if (options.dev) {
    providers.push(
      Credentials({
        id: "dev",
        name: "Development sign-in",
        credentials: { name: { label: "Name" }, role: { label: "Role" } },
        async authorize(credentials, request) {
          if (!e.LABLINK_DEV_LOGIN || !isLoopbackRequest(request.headers)) {
            logger.warn("development sign-in refused: not a loopback request");
            return null;
          }
          const parsed = devLoginInput.safeParse({
            name: credentials?.name,
            role: credentials?.role,
          });
          if (!parsed.success) return null;
          return devSignIn(db, parsed.data, clientIp(request.headers));
        },
      }),
    );
  }
  if (options.email && deps.mailer) {
    const mailer = deps.mailer;
    const from = e.LABLINK_EMAIL_FROM as string;
    providers.push({
      id: "email",
      type: "email",
      name: "Email",
      from,
      maxAge: EMAIL_LINK_MAX_AGE_S,
      async sendVerificationRequest({ identifier, url }) {
        // The link is a credential: it goes into the mail and nowhere else (no logs).
        await mailer.sendMail({
          to: identifier,
          from,
          subject: "Your LabLink sign-in link",
          text: `Sign in to LabLink:\n\n${url}\n\nThe link works once, for 10 minutes. If you did not ask for it, ignore this email.\n`,
        });
      },
    });
  }
  if (options.oidc && e.LABLINK_OIDC_ISSUER) {
    providers.push({
      id: "oidc",
      name: e.LABLINK_OIDC_NAME,
      type: "oidc",
      issuer: e.LABLINK_OIDC_ISSUER,
      clientId: e.LABLINK_OIDC_CLIENT_ID,
      clientSecret: e.LABLINK_OIDC_CLIENT_SECRET,
      checks: ["pkce", "state", "nonce"],
      // Read email and name from the userinfo endpoint: conformant providers put only `sub` (and
      // no email) in the ID token when an access token is issued.
      idToken: false,
    });
  }
  if (options.github) {
    providers.push(
      GitHub({
        clientId: e.AUTH_GITHUB_ID,
        clientSecret: e.AUTH_GITHUB_SECRET,
        // Auth.js falls back to the primary address even when GitHub has not verified it; the
        // email is the identity here, so only a verified one counts.
        userinfo: {
          url: "https://api.github.com/user",
          async request({ tokens }: { tokens: { access_token?: string } }) {
            const get = (path: string) =>
              fetch(`https://api.github.com${path}`, {
                headers: {
                  authorization: `Bearer ${tokens.access_token}`,
                  "user-agent": "lablink",
                },
              }).then((r) => (r.ok ? r.json() : null));
            const profile = (await get("/user")) as Record<string, unknown>;
            const emails = (await get("/user/emails")) as GitHubEmail[] | null;
            return { ...profile, email: verifiedGitHubEmail(emails) };
          },
        },
      }),
    );
  }

  return {
    secret: e.AUTH_SECRET,
    trustHost: true,
    basePath: "/api/auth",
    adapter: DrizzleAdapter(db, {
      usersTable: users,
      accountsTable: accounts,
      sessionsTable: sessions,
      verificationTokensTable: verificationTokens,
    }),
    session: { strategy: "jwt", maxAge: 12 * 60 * 60 },
    // Auth.js's own messages go to our logger as type and message only (no request details).
    logger: {
      error: (error) => {
        // `type` survives minification (the class name does not); the cause says what failed.
        const cause = (error as { cause?: { err?: unknown } }).cause?.err;
        logger.warn(
          {
            authError: (error as { type?: string }).type ?? error.name,
            cause: cause instanceof Error ? `${cause.name}: ${cause.message}` : undefined,
            // OAuth error responses (e.g. invalid_grant): codes and descriptions, no secrets.
            oauthError: (cause as { error?: string } | undefined)?.error,
            oauthErrorDescription: (cause as { error_description?: string } | undefined)
              ?.error_description,
          },
          "sign-in error",
        );
      },
      warn: (code) => logger.warn({ authWarning: code }, "Auth.js warning"),
      debug: () => {},
    },
    pages: { signIn: "/signin", error: "/signin", verifyRequest: "/signin/check-email" },
    providers,
    callbacks: {
      /**
       * Runs before anything is stored: for an email link, before the token is created and the
       * mail sent; for OIDC and GitHub, before the user and account rows are created.
       */
      signIn({ user, account, profile }) {
        if (account?.provider === "dev") return true;
        if (profile && profile.email_verified === false) return NOT_ALLOWED_PATH;
        // The email is the identity (allow-list, admin bootstrap): an OIDC provider must vouch
        // for it, unless the admin opted in for a provider that verifies without saying so.
        if (
          account?.provider === "oidc" &&
          profile?.email_verified !== true &&
          !e.LABLINK_OIDC_ALLOW_UNVERIFIED_EMAIL
        ) {
          logger.warn("OIDC sign-in refused: the provider did not mark the email as verified");
          return NOT_ALLOWED_PATH;
        }
        return emailAllowed(user.email, allowList) ? true : NOT_ALLOWED_PATH;
      },
      async jwt({ token, user, account }) {
        if (user?.id) {
          if (account && account.provider !== "dev") {
            await applyAdminBootstrap(db, { id: user.id, email: user.email }, adminEmails);
          }
          token.sub = user.id;
          token.role = (await userRole(db, user.id)) ?? user.role;
        }
        return token;
      },
      session({ session, token }) {
        if (token.sub) {
          session.user.id = token.sub;
          session.user.role = token.role as UserRole | undefined;
        }
        return session;
      },
    },
    events: {
      async signIn({ user, account }) {
        // Development sign-in writes its own audit row (devSignIn).
        if (!user.id || account?.provider === "dev") return;
        await audit(
          db,
          { kind: "user", id: user.id, ip: deps.clientIp ?? null },
          "auth.sign_in",
          { kind: "user", id: user.id },
          { provider: account?.provider ?? "unknown" },
        );
      },
      async createUser({ user }) {
        if (!user.id) return;
        await audit(db, { kind: "user", id: user.id, ip: deps.clientIp ?? null }, "user.create", {
          kind: "user",
          id: user.id,
        });
      },
    },
  };
}
