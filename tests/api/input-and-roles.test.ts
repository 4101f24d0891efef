import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEnrollmentToken } from "../../server/auth/enrollment";
import type { users, Vm } from "../../server/db/schema";
import { systemActor } from "../../server/domain/vm-state";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeAgent, makeFleet, makeUser, makeVms } from "../fixtures";
import { apiClient, tableCounts } from "./harness";
import { ACCESS, allProcedures } from "./procedures";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let researcher: typeof users.$inferSelect;
let admin: typeof users.$inferSelect;
let vm: Vm;
let token: string;
let enrollmentToken: string;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  researcher = await makeUser(t.db, "researcher");
  admin = await makeUser(t.db, "admin");
  const fleet = await makeFleet(t.db);
  [vm] = (await makeVms(t.db, fleet, 3, "ready")) as [Vm];
  token = await makeAgent(t.db, vm);
  const byo = await makeFleet(t.db, { driver: "byo" });
  enrollmentToken = (
    await createEnrollmentToken(t.db, {
      fleetId: byo.id,
      maxUses: 5,
      expiresInS: 600,
      actor: systemActor,
    })
  ).token;
});
afterAll(() => t.drop());

const procedures = allProcedures();

function authFor(tier: string) {
  if (tier === "agent") return { authorization: `Bearer ${token}` };
  if (tier === "enrollment") return { authorization: `Bearer ${enrollmentToken}` };
  if (tier === "admin") return { userId: admin.id };
  if (tier === "researcher") return { userId: researcher.id };
  return {};
}

const call = (type: string, path: string, input: unknown, auth: object) =>
  type === "query" ? api.query(path, input, auth) : api.mutate(path, input, auth);

describe("the access map", () => {
  it("names every procedure of the router, and nothing else", () => {
    const paths = procedures.map((p) => p.path).sort();
    expect(paths).toEqual(Object.keys(ACCESS).sort());
  });
});

describe("bad input on every procedure is a 400-class error and writes nothing", () => {
  const huge = "x".repeat(200_000);
  const badInputs: [string, (vmId: string) => unknown][] = [
    ["a string", () => "hello"],
    ["a number", () => 42],
    ["an array", () => [1, 2, 3]],
    ["unknown fields", (vmId) => ({ vmId, surprise: true })],
    [
      "wrong types",
      (vmId) => ({
        vmId,
        fleetId: 7,
        bootId: 9,
        gpus: "many",
        waitMs: "soon",
        limit: "all",
        type: 3,
      }),
    ],
    [
      "huge strings",
      (vmId) => ({
        vmId,
        bootId: huge,
        hostname: huge,
        search: huge,
        instanceType: huge,
        error: huge,
      }),
    ],
    ["null", () => null],
  ];
  for (const { path, type } of procedures) {
    for (const [label, make] of badInputs) {
      it(`${path}: ${label}`, async () => {
        const before = await tableCounts(t.db);
        const res = await call(type, path, make(vm.id), authFor(ACCESS[path] ?? "public"));
        expect(res.status, JSON.stringify(res.error)).toBeGreaterThanOrEqual(400);
        expect(res.status).toBeLessThan(500);
        expect(res.error?.message).toBeTruthy();
        expect(await tableCounts(t.db)).toEqual(before);
      });
    }
  }

  it("a body that is not JSON is a 400", async () => {
    const res = await api.mutate("vm.claim", undefined, {
      userId: researcher.id,
      rawBody: "{not json",
    });
    expect(res.status).toBe(400);
  });
});

describe("roles", () => {
  it("anonymous callers get only pool.summary", async () => {
    for (const { path, type } of procedures) {
      const res = await call(type, path, undefined, {});
      if (ACCESS[path] === "public") expect(res.status, path).toBe(200);
      else expect(res.status, path).toBe(401);
    }
  });

  it("a researcher cannot call admin procedures", async () => {
    for (const { path, type } of procedures.filter((p) => ACCESS[p.path] === "admin")) {
      const before = await tableCounts(t.db);
      const res = await call(type, path, undefined, { userId: researcher.id });
      expect(res.status, path).toBe(403);
      expect(res.error?.message).toBe("Only LabLink admins can do this.");
      expect(await tableCounts(t.db)).toEqual(before);
    }
  });

  it("an admin can call admin procedures", async () => {
    const list = await api.query("vm.list", { limit: 2 }, { userId: admin.id });
    expect(list.status).toBe(200);
    expect(list.data).toMatchObject({ total: 3 });
    expect((list.data as { rows: unknown[] }).rows).toHaveLength(2);
    const fleets = await api.query("fleet.list", undefined, { userId: admin.id });
    expect(fleets.status).toBe(200);
  });

  it("a researcher claims, sees and releases through the API", async () => {
    const claim = await api.mutate("vm.claim", {}, { userId: researcher.id });
    expect(claim.status).toBe(200);
    const mine = await api.query("vm.mine", undefined, { userId: researcher.id });
    expect(mine.data).toMatchObject({
      state: "claimed",
      name: (claim.data as { name: string }).name,
    });
    const release = await api.mutate("vm.release", undefined, { userId: researcher.id });
    expect(release.data).toMatchObject({ state: "releasing" });
    const again = await api.mutate("vm.release", undefined, { userId: researcher.id });
    expect(again.status).toBe(404);
  });
});
