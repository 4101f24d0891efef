import http from "node:http";
import type { AddressInfo } from "node:net";
import { Auth } from "@auth/core";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildAuthConfig } from "../../server/auth/options";
import { users } from "../../server/db/schema";
import { parseEnv } from "../../server/env";
import { prepareRequestHeaders } from "../../server/http";
import { createTestDatabase, type TestDatabase } from "../db";

/**
 * Development sign-in over real HTTP: a Node server that does what server/web.ts does at the edge
 * (prepareRequestHeaders) and hands the request to Auth.js with the app's configuration, as the
 * Next route does. The client is on loopback, as a DNS-rebinding page or a same-host proxy is.
 */
let t: TestDatabase;
let server: http.Server;
let port: number;
let trust = parseEnv({}).LABLINK_TRUST_PROXY;

beforeAll(async () => {
  t = await createTestDatabase();
  const config = buildAuthConfig({
    db: t.db,
    env: parseEnv({ AUTH_SECRET: "x".repeat(40), LABLINK_DEV_LOGIN: "true" }),
  });
  server = http.createServer(async (req, res) => {
    prepareRequestHeaders(req.headers, req.socket.remoteAddress, trust);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
    const response = await Auth(
      new Request(`http://${req.headers.host}${req.url}`, {
        method: req.method,
        headers,
        body: req.method === "POST" ? Buffer.concat(chunks) : undefined,
      }),
      config,
    );
    res.writeHead(response.status, [...response.headers].flat());
    res.end(Buffer.from(await response.arrayBuffer()));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await t.drop();
});

/** A raw HTTP request (fetch would not let us choose the Host header). */
function request(
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string },
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, path, method: opts.method ?? "GET", headers: opts.headers },
      (res) => {
        let body = "";
        res.on("data", (d) => {
          body += d;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

const cookiesOf = (h: http.IncomingHttpHeaders) =>
  (h["set-cookie"] ?? []).map((c) => c.split(";")[0] as string);

/** Posts the development sign-in form with the given headers; true if a session came back. */
async function devSignIn(name: string, headers: Record<string, string>): Promise<boolean> {
  const csrf = await request("/api/auth/csrf", { headers });
  const { csrfToken } = JSON.parse(csrf.body) as { csrfToken: string };
  const res = await request("/api/auth/callback/dev", {
    method: "POST",
    headers: {
      ...headers,
      "content-type": "application/x-www-form-urlencoded",
      cookie: cookiesOf(csrf.headers).join("; "),
    },
    body: new URLSearchParams({ name, role: "admin", csrfToken }).toString(),
  });
  return cookiesOf(res.headers).some((c) => /session-token=./.test(c));
}

const userExists = async (name: string) =>
  (await t.db.select().from(users).where(eq(users.name, name))).length > 0;

describe("development sign-in at the edge", () => {
  it("signs in a loopback client that names a loopback host", async () => {
    expect(await devSignIn("local-admin", { host: `localhost:${port}` })).toBe(true);
    expect(await devSignIn("local-admin-2", { host: `127.0.0.1:${port}` })).toBe(true);
    expect(await userExists("local-admin")).toBe(true);
  });

  it("refuses a forged X-Forwarded-Host, whatever the Host", async () => {
    expect(
      await devSignIn("rebind-1", {
        host: "lablink.attacker.example",
        "x-forwarded-host": "localhost",
      }),
    ).toBe(false);
    expect(
      await devSignIn("rebind-2", { host: `localhost:${port}`, "x-forwarded-host": "localhost" }),
    ).toBe(false);
    expect(await userExists("rebind-1")).toBe(false);
    expect(await userExists("rebind-2")).toBe(false);
  });

  it("refuses a page that DNS-rebinds its own host name to 127.0.0.1", async () => {
    expect(await devSignIn("rebind-3", { host: `lablink.attacker.example:${port}` })).toBe(false);
    expect(await userExists("rebind-3")).toBe(false);
  });

  it("refuses a request through a same-host proxy (any forwarding header), even a trusted one", async () => {
    expect(
      await devSignIn("proxied-1", { host: "localhost", "x-forwarded-for": "203.0.113.7" }),
    ).toBe(false);
    expect(await devSignIn("proxied-2", { host: "localhost", "x-real-ip": "203.0.113.7" })).toBe(
      false,
    );
    trust = { kind: "hops", hops: 1 };
    try {
      expect(
        await devSignIn("proxied-3", { host: "localhost", "x-forwarded-proto": "https" }),
      ).toBe(false);
    } finally {
      trust = { kind: "none" };
    }
    expect(await userExists("proxied-1")).toBe(false);
  });

  it("refuses a client that writes the headers the edge sets", async () => {
    // The socket is loopback here, so the forged peer is overwritten with the same value; the
    // forged "not forwarded" cannot hide a forwarding header either.
    expect(
      await devSignIn("forged", {
        host: "localhost",
        "x-forwarded-host": "localhost",
        "x-lablink-forwarded": "",
      }),
    ).toBe(false);
  });
});
