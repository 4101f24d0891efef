import http from "node:http";
import type { AddressInfo } from "node:net";
import { Auth } from "@auth/core";
import { eq } from "drizzle-orm";
import Provider from "oidc-provider";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildAuthConfig, NOT_ALLOWED_PATH } from "../../server/auth/options";
import { accounts, users } from "../../server/db/schema";
import { parseEnv } from "../../server/env";
import { createTestDatabase, type TestDatabase } from "../db";

/**
 * OIDC sign-in against a real, standards-compliant OpenID provider (`oidc-provider`, with its
 * development login and consent pages) on loopback, through the real Auth.js request handling
 * with the app's configuration. A scripted browser follows every redirect and submits the
 * provider's forms.
 */
const APP = "http://localhost:3000";
let t: TestDatabase;
let issuer: string;
let server: http.Server;

beforeAll(async () => {
  t = await createTestDatabase();
  let handler: http.RequestListener = () => {};
  server = http.createServer((req, res) => handler(req, res));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: "lablink",
        client_secret: "lablink-client-secret-for-tests",
        redirect_uris: [`${APP}/api/auth/callback/oidc`],
        grant_types: ["authorization_code"],
        response_types: ["code"],
      },
    ],
    async findAccount(_ctx: unknown, sub: string) {
      return {
        accountId: sub,
        async claims() {
          // "unverified:<address>" and "refuted:<address>": a provider that does not vouch for
          // the address (claim absent) or says it is not verified.
          const [, kind, address] = /^(?:(unverified|refuted):)?(.*)$/.exec(sub) ?? [];
          const email = address?.includes("@") ? address : `${address}@example.edu`;
          return {
            sub,
            email,
            ...(kind === "unverified" ? {} : { email_verified: kind !== "refuted" }),
            name: `User ${address}`,
          };
        },
      };
    },
    claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
    cookies: { keys: ["oidc-provider-test-cookie-key"] },
    features: { devInteractions: { enabled: true } },
  });
  handler = provider.callback() as http.RequestListener;
});
afterAll(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  await t?.drop();
});

function config(extra: Record<string, string> = {}) {
  return buildAuthConfig({
    db: t.db,
    env: parseEnv({
      ...extra,
      AUTH_SECRET: "y".repeat(40),
      LABLINK_OIDC_ISSUER: issuer,
      LABLINK_OIDC_CLIENT_ID: "lablink",
      LABLINK_OIDC_CLIENT_SECRET: "lablink-client-secret-for-tests",
      LABLINK_OIDC_NAME: "Example University",
      LABLINK_ALLOWED_EMAILS: "example.edu",
      LABLINK_ADMIN_EMAILS: "prof@example.edu",
    }),
    clientIp: "203.0.113.50",
  });
}

/** One cookie jar per host; app URLs go to Auth.js, everything else over real HTTP. */
class Browser {
  jars = new Map<string, Map<string, string>>();
  constructor(readonly env: Record<string, string> = {}) {}
  async fetch(url: string, init: RequestInit = {}): Promise<Response> {
    const u = new URL(url);
    const jar = this.jars.get(u.host) ?? new Map<string, string>();
    this.jars.set(u.host, jar);
    const headers = new Headers(init.headers);
    if (jar.size) headers.set("cookie", [...jar].map(([k, v]) => `${k}=${v}`).join("; "));
    const req = new Request(url, { ...init, headers, redirect: "manual" });
    const res = url.startsWith(APP) ? await Auth(req, config(this.env)) : await fetch(req);
    for (const c of res.headers.getSetCookie()) {
      const pair = c.split(";")[0] ?? "";
      const i = pair.indexOf("=");
      if (i <= 0) continue;
      if (pair.slice(i + 1) === "" || /max-age=0|expires=Thu, 01 Jan 1970/i.test(c))
        jar.delete(pair.slice(0, i));
      else jar.set(pair.slice(0, i), pair.slice(i + 1));
    }
    return res;
  }

  /** Follows redirects; on the provider's login or consent page, submits the form. */
  async run(first: Response, login: string, base: string): Promise<Response> {
    let res = first;
    let from = base;
    for (let hops = 0; hops < 20; hops++) {
      const location = res.headers.get("location");
      if (location) {
        const next = new URL(location, from).toString();
        if (next.startsWith(APP) && !next.includes("/api/auth/")) return res;
        from = next;
        res = await this.fetch(next);
        continue;
      }
      const html = await res.text();
      const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
      if (!action) return new Response(html, { status: res.status });
      const fields = new URLSearchParams();
      for (const [tag] of html.matchAll(/<input[^>]*>/g)) {
        const name = /name="([^"]+)"/.exec(tag)?.[1];
        if (name) fields.set(name, /value="([^"]*)"/.exec(tag)?.[1] ?? "");
      }
      if (fields.has("login")) {
        fields.set("login", login);
        fields.set("password", "any");
      }
      from = new URL(action, from).toString();
      res = await this.fetch(from, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: fields,
      });
    }
    throw new Error("too many redirects");
  }

  async signIn(login: string) {
    const csrf = (await (await this.fetch(`${APP}/api/auth/csrf`)).json()) as {
      csrfToken: string;
    };
    const start = await this.fetch(`${APP}/api/auth/signin/oidc`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ csrfToken: csrf.csrfToken, callbackUrl: `${APP}/` }),
    });
    expect(start.headers.get("location")).toContain(`${issuer}/auth?`);
    return this.run(start, login, APP);
  }

  async session() {
    return (await (await this.fetch(`${APP}/api/auth/session`)).json()) as {
      user?: { id: string; email: string; role: string; name: string };
    } | null;
  }
}

describe("OIDC sign-in against a real OpenID provider", () => {
  it("signs a researcher in, creating the user and linked account once", async () => {
    const browser = new Browser();
    const done = await browser.signIn("ada");
    expect(done.headers.get("location")).toBe(`${APP}/`);
    const session = await browser.session();
    expect(session?.user).toMatchObject({
      email: "ada@example.edu",
      name: "User ada",
      role: "researcher",
    });
    const [account] = await t.db
      .select()
      .from(accounts)
      .where(eq(accounts.userId, session?.user?.id as string));
    expect(account).toMatchObject({ provider: "oidc", providerAccountId: "ada" });

    // Signing in again finds the same user.
    const again = new Browser();
    await again.signIn("ada");
    expect((await again.session())?.user?.id).toBe(session?.user?.id);
    expect(await t.db.select().from(users).where(eq(users.email, "ada@example.edu"))).toHaveLength(
      1,
    );
  });

  it("an address on LABLINK_ADMIN_EMAILS becomes admin", async () => {
    const browser = new Browser();
    await browser.signIn("prof");
    expect((await browser.session())?.user?.role).toBe("admin");
  });

  it("an account outside the allow-list lands on the not-allowed page and nothing is stored", async () => {
    const browser = new Browser();
    const done = await browser.signIn("eve@elsewhere.org");
    expect(done.headers.get("location")).toContain(NOT_ALLOWED_PATH);
    expect(await browser.session()).toBeNull();
    expect(await t.db.select().from(users).where(eq(users.email, "eve@elsewhere.org"))).toEqual([]);
    expect(
      await t.db.select().from(accounts).where(eq(accounts.providerAccountId, "eve@elsewhere.org")),
    ).toEqual([]);
  });

  it("an address the provider does not mark verified signs nobody in, not even an admin's address", async () => {
    for (const login of ["unverified:prof@example.edu", "refuted:prof@example.edu"]) {
      const browser = new Browser();
      const done = await browser.signIn(login);
      expect(done.headers.get("location")).toContain(NOT_ALLOWED_PATH);
      expect(await browser.session()).toBeNull();
      expect(
        await t.db.select().from(accounts).where(eq(accounts.providerAccountId, login)),
      ).toEqual([]);
    }
  });

  it("an admin who opts in for a provider that omits the claim lets its users in", async () => {
    const browser = new Browser({ LABLINK_OIDC_ALLOW_UNVERIFIED_EMAIL: "true" });
    await browser.signIn("unverified:kim@example.edu");
    expect((await browser.session())?.user).toMatchObject({ email: "kim@example.edu" });
    // An explicit "not verified" is refused even then.
    const refuted = new Browser({ LABLINK_OIDC_ALLOW_UNVERIFIED_EMAIL: "true" });
    const done = await refuted.signIn("refuted:lee@example.edu");
    expect(done.headers.get("location")).toContain(NOT_ALLOWED_PATH);
  });
});
