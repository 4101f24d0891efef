import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { handleTrpc } from "../../server/api/handler";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { tableCounts } from "./harness";

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(() => t.drop());

describe("state-changing calls cannot come from another site's form", () => {
  it("form-encodable bodies (text/plain, urlencoded, multipart) are refused and change nothing", async () => {
    const fleet = await makeFleet(t.db);
    await makeVms(t.db, fleet, 1, "ready");
    const user = await makeUser(t.db);
    const ctx = () => ({
      db: t.db,
      events: null,
      settings: { heartbeatIntervalS: 15 },
      // Even if the browser sent the session cookie along, the call must fail.
      getSession: async () => ({ id: user.id }),
    });
    const form = new FormData();
    form.set("fleetId", fleet.id);
    const bodies: [string, BodyInit, Record<string, string>][] = [
      ["text/plain", '{"json":{}}', { "content-type": "text/plain" }],
      ["urlencoded", "json=%7B%7D", { "content-type": "application/x-www-form-urlencoded" }],
      ["multipart", form, {}],
    ];
    for (const [label, body, headers] of bodies) {
      const before = await tableCounts(t.db);
      const res = await handleTrpc(
        new Request("http://localhost/api/trpc/vm.claim", {
          method: "POST",
          headers: { origin: "https://evil.example", ...headers },
          body,
        }),
        ctx,
      );
      expect(res.status, label).toBeGreaterThanOrEqual(400);
      expect(res.status, label).toBeLessThan(500);
      expect(res.headers.get("access-control-allow-origin"), label).toBeNull();
      expect(await tableCounts(t.db), label).toEqual(before);
    }
  });
});
