import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../db";
import { apiClient, tableCounts } from "./harness";
import { allowed, makeWorld, PRINCIPALS, type Principal, type PrincipalAuth } from "./principals";
import { ACCESS, allProcedures, SAMPLE_INPUT, type World } from "./procedures";

/**
 * Every procedure of the router × every kind of caller (tests/api/principals.ts) → allowed or
 * denied. Generated from the router itself: a procedure without an ACCESS tier or a SAMPLE_INPUT
 * fails here.
 */

/** Row-level exceptions: the sample claim names a fleet reserved for the first researcher's group. */
const EXCEPTIONS: Record<string, Partial<Record<Principal, "deny">>> = {
  "vm.claim": { "researcher of another group": "deny" },
};

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let world: World;
let auth: Record<Principal, PrincipalAuth>;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  ({ world, auth } = await makeWorld(t.db));
});
afterAll(() => t.drop());

const procedures = allProcedures();

describe("authorization matrix", () => {
  it("has a tier and a sample input for every procedure of the router, and nothing else", () => {
    const paths = procedures.map((p) => p.path).sort();
    expect(Object.keys(ACCESS).sort()).toEqual(paths);
    expect(Object.keys(SAMPLE_INPUT).sort()).toEqual(paths);
  });

  for (const { path, type } of procedures) {
    it(`${path}`, async () => {
      const tier = ACCESS[path];
      const sample = SAMPLE_INPUT[path];
      expect(tier, `${path} has no tier in tests/api/procedures.ts`).toBeDefined();
      expect(sample, `${path} has no sample input in tests/api/procedures.ts`).toBeDefined();
      if (!tier || !sample) return;
      const outcome: Record<string, string> = {};
      const expected: Record<string, string> = {};
      for (const who of PRINCIPALS) {
        const ok = allowed(tier, type, who) && EXCEPTIONS[path]?.[who] !== "deny";
        expected[who] = ok ? "allow" : "deny";
        const before = await tableCounts(t.db);
        const input = sample(world);
        const res =
          type === "query"
            ? await api.query(path, input, auth[who])
            : await api.mutate(path, input, auth[who]);
        expect(res.status, `${path} as ${who}: ${JSON.stringify(res.error)}`).toBeLessThan(500);
        const denied = res.status === 401 || res.status === 403;
        outcome[who] = denied ? "deny" : "allow";
        if (denied) {
          expect(res.data, `${path} as ${who} returned data`).toBeUndefined();
          expect(await tableCounts(t.db), `${path} as ${who} wrote`).toEqual(before);
        }
      }
      expect(outcome).toEqual(expected);
    });
  }
});
