import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../tests/db";
import { auditEvents, users } from "../db/schema";
import { devLoginInput, devSignIn, isLoopbackRequest } from "./dev-login";

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(() => t.drop());

describe("development sign-in", () => {
  it("accepts only loopback requests", () => {
    const h = (host: string, fwd?: string) =>
      new Headers({ host, ...(fwd ? { "x-forwarded-host": fwd } : {}) });
    expect(isLoopbackRequest(h("localhost:3000"))).toBe(true);
    expect(isLoopbackRequest(h("127.0.0.1:3000"))).toBe(true);
    expect(isLoopbackRequest(h("[::1]:3000"))).toBe(true);
    expect(isLoopbackRequest(h("lablink.example.edu"))).toBe(false);
    expect(isLoopbackRequest(h("10.0.0.5:3000"))).toBe(false);
    // Behind a proxy, the public host decides.
    expect(isLoopbackRequest(h("127.0.0.1:3000", "lablink.example.edu"))).toBe(false);
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
