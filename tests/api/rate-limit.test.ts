import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { apiClient } from "./harness";

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(() => t.drop());

describe("rate limits", () => {
  it("claim answers 429 with Retry-After past the limit, per researcher, and recovers", async () => {
    const api = apiClient(t.db, { rateLimits: { claim: { limit: 3, windowS: 2 } } });
    const fleet = await makeFleet(t.db);
    await makeVms(t.db, fleet, 2, "ready");
    const me = await makeUser(t.db);
    const other = await makeUser(t.db);
    // Align to the start of a window so the three calls below share one.
    await new Promise((r) => setTimeout(r, 2000 - (Date.now() % 2000) + 50));
    for (let i = 0; i < 3; i++) {
      expect((await api.mutate("vm.claim", {}, { userId: me.id })).status).toBe(200);
    }
    const limited = await api.mutate("vm.claim", {}, { userId: me.id });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(Number(limited.headers.get("retry-after"))).toBeLessThanOrEqual(2);
    expect(limited.error?.message).toMatch(/Too many attempts/);
    // Another researcher is not affected.
    expect((await api.mutate("vm.claim", {}, { userId: other.id })).status).toBe(200);
    await new Promise((r) => setTimeout(r, Number(limited.headers.get("retry-after")) * 1000));
    expect((await api.mutate("vm.claim", {}, { userId: me.id })).status).toBe(200);
  });

  it("enrollment is limited per client IP", async () => {
    const api = apiClient(t.db, { rateLimits: { enroll: { limit: 2, windowS: 60 } } });
    const forged = `lle_${"0".repeat(32)}_${"A".repeat(43)}`;
    const call = (ip: string) =>
      api.mutate(
        "agent.enroll",
        { hostname: "h", agentVersion: "1", protocolVersion: 1 },
        { authorization: `Bearer ${forged}`, ip },
      );
    expect((await call("192.0.2.1")).status).toBe(401);
    expect((await call("192.0.2.1")).status).toBe(401);
    const limited = await call("192.0.2.1");
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toMatch(/^\d+$/);
    expect((await call("192.0.2.2")).status).toBe(401);
  });
});

describe("sign-in rate limit", () => {
  it("answers 429 with Retry-After per client IP for sign-in starts only, and recovers", async () => {
    const { signInThrottle } = await import("../../server/auth/rate-limit");
    const rule = { limit: 2, windowS: 1 };
    const start = () =>
      new Request("http://localhost/api/auth/signin/email", { method: "POST", body: "" });
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 20));
    expect(await signInThrottle(t.db, start(), "192.0.2.50", rule)).toBeNull();
    expect(await signInThrottle(t.db, start(), "192.0.2.50", rule)).toBeNull();
    const limited = await signInThrottle(t.db, start(), "192.0.2.50", rule);
    expect(limited?.status).toBe(429);
    expect(limited?.headers.get("retry-after")).toBe("1");
    // Other IPs and other Auth.js calls are not affected.
    expect(await signInThrottle(t.db, start(), "192.0.2.51", rule)).toBeNull();
    const session = new Request("http://localhost/api/auth/session");
    expect(await signInThrottle(t.db, session, "192.0.2.50", rule)).toBeNull();
    await new Promise((r) => setTimeout(r, 1000));
    expect(await signInThrottle(t.db, start(), "192.0.2.50", rule)).toBeNull();
  });
});
