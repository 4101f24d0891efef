import { Auth } from "@auth/core";
import { eq, sql } from "drizzle-orm";
import nodemailer from "nodemailer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildAuthConfig, NOT_ALLOWED_PATH } from "../../server/auth/options";
import { auditEvents, users, verificationTokens } from "../../server/db/schema";
import { parseEnv } from "../../server/env";
import { createTestDatabase, type TestDatabase } from "../db";

/**
 * Email sign-in links through the real Auth.js request handling (`Auth()` from @auth/core, the
 * function next-auth's route handlers call) with the app's real configuration, Postgres for users
 * and verification tokens, and nodemailer's JSON transport standing in for the SMTP server.
 */
let t: TestDatabase;
const sent: { to: string; text: string }[] = [];
const transport = nodemailer.createTransport({ jsonTransport: true });
const mailer = {
  async sendMail(message: Record<string, unknown>) {
    const info = await transport.sendMail(message);
    const m = JSON.parse(info.message as unknown as string) as {
      to: { address: string }[];
      text: string;
    };
    sent.push({ to: m.to[0]?.address ?? "", text: m.text });
    return info;
  },
};

const BASE = "http://localhost:3000";

function config() {
  return buildAuthConfig({
    db: t.db,
    env: parseEnv({
      AUTH_SECRET: "x".repeat(40),
      LABLINK_SMTP_URL: "smtp://mail.example.edu:587",
      LABLINK_PUBLIC_URL: BASE,
      LABLINK_EMAIL_FROM: "LabLink <lablink@example.edu>",
      LABLINK_ALLOWED_EMAILS: "example.edu, visitor@partner.org",
      LABLINK_ADMIN_EMAILS: "boss@example.edu",
    }),
    mailer,
    clientIp: "198.51.100.9",
  });
}

/** A browser's cookie jar, just enough for Auth.js. */
class Browser {
  cookies = new Map<string, string>();
  async fetch(url: string, init: RequestInit = {}) {
    const headers = new Headers(init.headers);
    if (this.cookies.size) {
      headers.set("cookie", [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; "));
    }
    const res = await Auth(new Request(url, { ...init, headers, redirect: "manual" }), config());
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const i = pair?.indexOf("=") ?? -1;
      if (pair && i > 0) {
        const value = pair.slice(i + 1);
        if (value === "" || /max-age=0/i.test(c)) this.cookies.delete(pair.slice(0, i));
        else this.cookies.set(pair.slice(0, i), value);
      }
    }
    return res;
  }
  async requestLink(email: string) {
    const csrf = (await (await this.fetch(`${BASE}/api/auth/csrf`)).json()) as {
      csrfToken: string;
    };
    return this.fetch(`${BASE}/api/auth/signin/email`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ email, csrfToken: csrf.csrfToken, callbackUrl: `${BASE}/` }),
    });
  }
  async session() {
    const res = await this.fetch(`${BASE}/api/auth/session`);
    return (await res.json()) as { user?: { id: string; email: string; role: string } } | null;
  }
}

const linkIn = (text: string) => {
  const m = /(http:\/\/\S+\/api\/auth\/callback\/email\S+)/.exec(text);
  if (!m?.[1]) throw new Error(`no link in mail:\n${text}`);
  return m[1];
};

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(() => t.drop());

describe("email sign-in link", () => {
  it("request, read the link from the mail, sign in; the link cannot be used twice", async () => {
    const browser = new Browser();
    const res = await browser.requestLink("Ada@Example.edu");
    expect(res.status).toBe(302);
    expect(res.headers.get("location")).toContain("/api/auth/verify-request");
    const mail = sent.at(-1);
    expect(mail?.to).toBe("ada@example.edu");
    const link = linkIn(mail?.text ?? "");
    // Stored hashed, never as sent.
    const token = new URL(link).searchParams.get("token") as string;
    const [row] = await t.db.select().from(verificationTokens);
    expect(row?.token).not.toBe(token);
    expect((row?.expires.getTime() ?? 0) - Date.now()).toBeGreaterThan(9 * 60_000);
    expect((row?.expires.getTime() ?? 0) - Date.now()).toBeLessThanOrEqual(10 * 60_000);

    const signedIn = await browser.fetch(link);
    expect(signedIn.status).toBe(302);
    expect(signedIn.headers.get("location")).toBe(`${BASE}/`);
    const session = await browser.session();
    expect(session?.user).toMatchObject({ email: "ada@example.edu", role: "researcher" });
    const [audit] = await t.db
      .select()
      .from(auditEvents)
      .where(eq(auditEvents.action, "auth.sign_in"));
    expect(audit).toMatchObject({
      actorId: session?.user?.id,
      ip: "198.51.100.9",
      details: { provider: "email" },
    });

    // Reuse: refused, and no session for a fresh browser.
    const thief = new Browser();
    const again = await thief.fetch(link);
    expect(again.headers.get("location")).toMatch(/\/signin\?error=Verification/);
    expect(await thief.session()).toBeNull();
  });

  it("an expired link is refused", async () => {
    const browser = new Browser();
    await browser.requestLink("late@example.edu");
    const link = linkIn(sent.at(-1)?.text ?? "");
    await t.db
      .update(verificationTokens)
      .set({ expires: sql`now() - interval '1 second'` })
      .where(eq(verificationTokens.identifier, "late@example.edu"));
    const res = await browser.fetch(link);
    expect(res.headers.get("location")).toMatch(/\/signin\?error=Verification/);
    expect(await browser.session()).toBeNull();
    expect(await t.db.select().from(users).where(eq(users.email, "late@example.edu"))).toEqual([]);
  });

  it("an address outside the allow-list gets the not-allowed page, and nothing is created or sent", async () => {
    const before = sent.length;
    const [tokensBefore] = await t.db
      .select({ n: sql<number>`count(*)::int` })
      .from(verificationTokens);
    for (const email of ["mallory@evil.example", "other@partner.org"]) {
      const res = await new Browser().requestLink(email);
      expect(res.headers.get("location")).toContain(NOT_ALLOWED_PATH);
    }
    expect(sent.length).toBe(before);
    const [tokensAfter] = await t.db
      .select({ n: sql<number>`count(*)::int` })
      .from(verificationTokens);
    expect(tokensAfter?.n).toBe(tokensBefore?.n);
    expect(
      await t.db
        .select()
        .from(users)
        .where(sql`${users.email} IN ('mallory@evil.example', 'other@partner.org')`),
    ).toEqual([]);
    // An allowed single address still works.
    const ok = await new Browser().requestLink("visitor@partner.org");
    expect(ok.headers.get("location")).toContain("/api/auth/verify-request");
  });

  it("an address on ADMIN_EMAILS signs in as admin", async () => {
    const browser = new Browser();
    await browser.requestLink("boss@example.edu");
    await browser.fetch(linkIn(sent.at(-1)?.text ?? ""));
    expect((await browser.session())?.user?.role).toBe("admin");
  });
});
