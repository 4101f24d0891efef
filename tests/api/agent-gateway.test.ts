import { eq } from "drizzle-orm";
import superjson from "superjson";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_BODY_BYTES } from "../../server/api/request-limits";
import type { SessionUser } from "../../server/api/trpc";
import { DEFAULT_RATE_LIMITS } from "../../server/auth/rate-limit";
import { type Vm, vms } from "../../server/db/schema";
import { API_CSP, HSTS } from "../../server/security-headers";
import { createTestDatabase, type TestDatabase } from "../db";
import { heartbeatInput as heartbeat, makeAgent, makeFleet, makeVms } from "../fixtures";
import { startApiServer, startFetchApiServer } from "../http";
import { tableCounts } from "./harness";

/**
 * The agent gateway (server/api/agent-gateway.ts) answers agent calls without Next and the fetch
 * adapter. Agents must not be able to tell: every request below goes to a server with the gateway
 * and to one without it (the fetch handler the Next route uses), and both answers must match in
 * status, body and the headers that matter.
 */
let t: TestDatabase;
let withGateway: Awaited<ReturnType<typeof startFetchApiServer>>;
let without: Awaited<ReturnType<typeof startFetchApiServer>>;
let vm: Vm;
let other: Vm;
let token: string;

beforeAll(async () => {
  t = await createTestDatabase();
  const context = {
    db: t.db,
    events: null,
    settings: {
      heartbeatIntervalS: 15,
      rateLimits: { ...DEFAULT_RATE_LIMITS, enroll: { limit: 2, windowS: 60 } },
    },
    getSession: async (): Promise<SessionUser | null> => null,
  };
  withGateway = await startFetchApiServer(context, { gateway: true });
  without = await startFetchApiServer(context, { gateway: false });
  const fleet = await makeFleet(t.db, { gpuCount: 0 });
  [vm, other] = (await makeVms(t.db, fleet, 2, "ready")) as [Vm, Vm];
  token = await makeAgent(t.db, vm);
  await t.db.update(vms).set({ bootId: "boot-1" }).where(eq(vms.id, vm.id));
});
afterAll(async () => {
  await withGateway?.close();
  await without?.close();
  await t?.drop();
});

type Req = { method: string; path: string; body?: string; headers?: Record<string, string> };

const post = (path: string, input: unknown, auth: string | null = `Bearer ${token}`): Req => ({
  method: "POST",
  path,
  body: JSON.stringify(superjson.serialize(input)),
  headers: {
    "content-type": "application/json",
    ...(auth ? { authorization: auth } : {}),
  },
});

const get = (path: string, input: unknown): Req => ({
  method: "GET",
  path: `${path}?input=${encodeURIComponent(JSON.stringify(superjson.serialize(input)))}`,
  headers: { authorization: `Bearer ${token}` },
});

async function send(base: string, r: Req) {
  const res = await fetch(`${base}/api/trpc/${r.path}`, {
    method: r.method,
    headers: r.headers,
    body: r.body,
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Compared as text.
  }
  return {
    status: res.status,
    body,
    contentType: res.headers.get("content-type"),
    retryAfter: res.headers.get("retry-after"),
  };
}

/** Sends to both servers; the answers must match. Returns the gateway's. */
async function both(r: Req) {
  const gatewayBefore = withGateway.fallbackCalls();
  const a = await send(withGateway.url, r);
  const b = await send(without.url, r);
  expect(a).toEqual(b);
  return { ...a, viaGateway: withGateway.fallbackCalls() === gatewayBefore };
}

describe("agent gateway", () => {
  it("answers a heartbeat exactly like the fetch handler", async () => {
    const res = await both(post("agent.heartbeat", heartbeat(vm.id)));
    expect(res.viaGateway).toBe(true);
    expect(res.status).toBe(200);
    expect(res.contentType).toBe("application/json");
    expect(res.body).toMatchObject({
      result: { data: { json: { vmId: vm.id, state: "ready", commands: [], reRegister: false } } },
    });
  });

  it("sends the API's security headers, and HSTS behind an HTTPS proxy", async () => {
    const r = post("agent.heartbeat", heartbeat(vm.id));
    for (const https of [false, true]) {
      const res = await fetch(`${withGateway.url}/api/trpc/${r.path}`, {
        method: "POST",
        headers: { ...r.headers, ...(https ? { "x-forwarded-proto": "https" } : {}) },
        body: r.body,
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-security-policy")).toBe(API_CSP);
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      expect(res.headers.get("x-frame-options")).toBe("DENY");
      expect(res.headers.get("cache-control")).toBe("no-store");
      expect(res.headers.get("strict-transport-security")).toBe(https ? HSTS : null);
    }
  });

  it("answers a long poll with nothing to do (GET, ?input=) the same way", async () => {
    const res = await both(get("agent.poll", { vmId: vm.id, waitMs: 0 }));
    expect(res.viaGateway).toBe(true);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ result: { data: { json: { commands: [] } } } });
  });

  it("refuses bad tokens, another VM's id and bad input with the same errors, writing nothing", async () => {
    const before = await tableCounts(t.db);
    const cases: [Req, number, string][] = [
      [post("agent.heartbeat", heartbeat(vm.id), null), 401, "UNAUTHORIZED"],
      [post("agent.heartbeat", heartbeat(vm.id), "Bearer lla_nope"), 401, "UNAUTHORIZED"],
      [post("agent.heartbeat", heartbeat(vm.id), `Basic ${token}`), 401, "UNAUTHORIZED"],
      [post("agent.heartbeat", heartbeat(other.id)), 403, "FORBIDDEN"],
      [post("agent.heartbeat", heartbeat(vm.id, { inUse: "yes" })), 400, "BAD_REQUEST"],
      [post("agent.heartbeat", { vmId: vm.id }), 400, "BAD_REQUEST"],
      [post("agent.heartbeat", undefined), 400, "BAD_REQUEST"],
      [{ ...post("agent.heartbeat", null), body: "{not json" }, 400, "BAD_REQUEST"],
      [{ ...get("agent.poll", null), path: "agent.poll?input=%E0%A4%A" }, 400, "BAD_REQUEST"],
      // JSON, but not superjson that decodes: unknown type annotations, in a body and a query.
      [
        {
          ...post("agent.heartbeat", null),
          body: JSON.stringify({
            json: heartbeat(vm.id),
            meta: { values: { vmId: ["custom", "x"] } },
          }),
        },
        400,
        "BAD_REQUEST",
      ],
      [
        {
          ...post("agent.ack", null),
          body: JSON.stringify({
            json: { vmId: vm.id },
            meta: { values: { vmId: ["symbol", "x"] } },
          }),
        },
        400,
        "BAD_REQUEST",
      ],
      [
        {
          ...get("agent.poll", null),
          path: `agent.poll?input=${encodeURIComponent(
            JSON.stringify({ json: "x", meta: { values: ["bigint"] } }),
          )}`,
        },
        400,
        "BAD_REQUEST",
      ],
    ];
    for (const [req, status, code] of cases) {
      const res = await both(req);
      expect(res.viaGateway, req.path).toBe(true);
      expect(res.status, JSON.stringify(res.body)).toBe(status);
      expect(res.body).toMatchObject({ error: { json: { data: { code } } } });
      // Never a stack trace, whoever answers.
      expect(JSON.stringify(res.body)).not.toContain("    at ");
    }
    const bad = await both(post("agent.heartbeat", heartbeat(vm.id, { inUse: "yes" })));
    expect(bad.body).toMatchObject({
      error: { json: { data: { fieldErrors: [expect.objectContaining({ path: "inUse" })] } } },
    });
    expect(await tableCounts(t.db)).toEqual(before);
  });

  it("leaves batches, wrong methods and unknown agent paths to the regular handler", async () => {
    const calls: [Req, number][] = [
      [{ ...post("agent.heartbeat", null), path: "agent.heartbeat?batch=1", body: "{}" }, 400],
      [{ ...get("agent.heartbeat", heartbeat(vm.id)) }, 405],
      [post("agent.nothing", {}), 404],
      [
        { ...post("agent.heartbeat", heartbeat(vm.id)), headers: { "content-type": "text/plain" } },
        415,
      ],
    ];
    for (const [req, status] of calls) {
      const res = await both(req);
      expect(res.viaGateway, req.path).toBe(false);
      expect(res.status, `${req.method} ${req.path}`).toBe(status);
    }
  });

  it("answers an enrollment over the limit with 429 and Retry-After", async () => {
    const enroll = post(
      "agent.enroll",
      { hostname: "byo-1" },
      `Bearer lle_${"0".repeat(32)}_${"A".repeat(43)}`,
    );
    const statuses: number[] = [];
    let last: Awaited<ReturnType<typeof send>> | null = null;
    for (let i = 0; i < 3; i++) {
      last = await send(withGateway.url, enroll);
      statuses.push(last.status);
    }
    expect(statuses.slice(0, 2)).toEqual([401, 401]);
    expect(statuses[2]).toBe(429);
    expect(Number(last?.retryAfter)).toBeGreaterThan(0);
  });

  it("refuses a body over the limit with 413 like the fetch handler, and no state change", async () => {
    const before = await tableCounts(t.db);
    const huge = "x".repeat(MAX_BODY_BYTES + 1);
    const res = await both({
      ...post("agent.logs", { vmId: vm.id, lines: [] }),
      body: JSON.stringify({ json: { vmId: vm.id, lines: [{ text: huge }] } }),
    });
    expect(res.viaGateway).toBe(true);
    expect(res.status).toBe(413);
    expect(res.body).toMatchObject({ error: { json: { data: { code: "PAYLOAD_TOO_LARGE" } } } });
    expect(await tableCounts(t.db)).toEqual(before);
  });

  it("counts a chunked body's bytes as they arrive: 413 past the limit", async () => {
    const before = await tableCounts(t.db);
    const chunk = new TextEncoder().encode("x".repeat(256 * 1024));
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent > MAX_BODY_BYTES * 2) controller.close();
        else {
          sent += chunk.byteLength;
          controller.enqueue(chunk);
        }
      },
    });
    const fallbacks = withGateway.fallbackCalls();
    const res = await fetch(`${withGateway.url}/api/trpc/agent.logs`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body,
      duplex: "half",
    } as RequestInit);
    expect(res.status).toBe(413);
    // Answered by the gateway itself.
    expect(withGateway.fallbackCalls()).toBe(fallbacks);
    expect(await tableCounts(t.db)).toEqual(before);
  });
});

describe("agent gateway long polls", () => {
  let api: Awaited<ReturnType<typeof startApiServer>>;
  beforeAll(async () => {
    api = await startApiServer(t.db, t.sql, 15);
  });
  afterAll(() => api?.close());

  const pollUrl = (waitMs: number) =>
    `${api.url}/api/trpc/agent.poll?input=${encodeURIComponent(
      JSON.stringify(superjson.serialize({ vmId: vm.id, waitMs })),
    )}`;

  async function until(check: () => boolean) {
    for (let i = 0; i < 100 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
    return check();
  }

  it("answers as soon as the VM changes", async () => {
    const started = Date.now();
    const res = fetch(pollUrl(20_000), { headers: { authorization: `Bearer ${token}` } });
    expect(await until(() => api.events.waiting(vm.id) === 1)).toBe(true);
    await t.sql`SELECT pg_notify('lablink_vm', ${JSON.stringify({ id: vm.id })})`;
    const answer = await res;
    expect(answer.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(api.events.waiting(vm.id)).toBe(0);
  });

  it("stops waiting when the agent hangs up", async () => {
    const hangUp = new AbortController();
    const res = fetch(pollUrl(20_000), {
      headers: { authorization: `Bearer ${token}` },
      signal: hangUp.signal,
    }).catch((err: Error) => err.name);
    expect(await until(() => api.events.waiting(vm.id) === 1)).toBe(true);
    hangUp.abort();
    expect(await res).toBe("AbortError");
    expect(await until(() => api.events.waiting(vm.id) === 0)).toBe(true);
  });
});
