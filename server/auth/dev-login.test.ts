import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../tests/db";
import { auditEvents, users } from "../db/schema";
import { prepareRequestHeaders } from "../http";
import { devLoginInput, devSignIn, isLoopbackRequest } from "./dev-login";

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(() => t.drop());

describe("development sign-in", () => {
  it("is decided by the socket, never by a header", () => {
    const h = (peer: string | undefined, headers: Record<string, string>) => {
      const raw: Record<string, string> = { ...headers };
      prepareRequestHeaders(raw, peer, { kind: "none" });
      return new Headers(raw);
    };
    expect(isLoopbackRequest(h("127.0.0.1", { host: "localhost:3000" }))).toBe(true);
    expect(isLoopbackRequest(h("::ffff:127.0.0.1", { host: "127.0.0.1:3000" }))).toBe(true);
    expect(isLoopbackRequest(h("::1", { host: "[::1]:3000" }))).toBe(true);
    // A host name that resolves to 127.0.0.1 (DNS rebinding) is not a loopback Host.
    expect(isLoopbackRequest(h("127.0.0.1", { host: "lablink.attacker.example" }))).toBe(false);
    // A loopback Host from a remote socket.
    expect(isLoopbackRequest(h("10.0.0.5", { host: "localhost:3000" }))).toBe(false);
    // A forwarding header, even one naming localhost, means a proxy or a forgery: refused.
    expect(
      isLoopbackRequest(h("127.0.0.1", { host: "evil.example", "x-forwarded-host": "localhost" })),
    ).toBe(false);
    expect(
      isLoopbackRequest(h("127.0.0.1", { host: "localhost", "x-forwarded-host": "localhost" })),
    ).toBe(false);
    expect(isLoopbackRequest(h("127.0.0.1", { host: "localhost", forwarded: "for=1.2.3.4" }))).toBe(
      false,
    );
    // A client cannot write the edge's own header.
    expect(
      isLoopbackRequest(h("10.0.0.5", { host: "localhost", "x-lablink-peer": "127.0.0.1" })),
    ).toBe(false);
    // A request that never passed the edge (no peer recorded) is refused.
    expect(isLoopbackRequest(new Headers({ host: "localhost:3000" }))).toBe(false);
  });

  it("validates the name", () => {
    expect(devLoginInput.safeParse({ name: "alice", role: "researcher" }).success).toBe(true);
    expect(devLoginInput.safeParse({ name: "<script>", role: "researcher" }).success).toBe(false);
    expect(devLoginInput.safeParse({ name: "a".repeat(41), role: "admin" }).success).toBe(false);
    expect(devLoginInput.safeParse({ name: "bob", role: "root" }).success).toBe(false);
  });

  it("creates the user once, with the chosen role, and audits each sign-in", async () => {
    const a = await devSignIn(t.db, { name: "Ada Lovelace", role: "researcher" });
    const b = await devSignIn(t.db, { name: "Ada Lovelace", role: "admin" });
    expect(b.id).toBe(a.id);
    expect(b).toMatchObject({ email: "ada-lovelace@dev.lablink.local", role: "admin" });
    expect(await t.db.select().from(users).where(eq(users.id, a.id))).toHaveLength(1);
    const audit = await t.db.select().from(auditEvents).where(eq(auditEvents.actorId, a.id));
    expect(audit.map((x) => x.action)).toEqual(["auth.sign_in", "auth.sign_in"]);
  });
});
