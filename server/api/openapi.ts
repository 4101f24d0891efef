import { z } from "zod";
import { appRouter } from "./root";
import type { Meta, Tier } from "./trpc";

/**
 * The OpenAPI 3.1 description of LabLink's HTTP API (served at /api/openapi.json), generated from
 * the tRPC router itself: every procedure a person can call with a personal API token appears,
 * with its zod input as JSON Schema, exactly as tRPC's HTTP transport takes it — a query is
 * `GET /api/trpc/<path>?input=<URL-encoded {"json": input}>`, a mutation is
 * `POST /api/trpc/<path>` with the body `{"json": input}` (superjson's envelope; plain JSON
 * values need no `meta`). Agent, enrollment and session-only procedures are left out: no API
 * token can call them.
 */

/** Tiers an API token can call, with how the description says so. */
const DESCRIBED: Partial<Record<Tier, string>> = {
  public: "Anyone; no token needed.",
  viewer: "Anyone; a token, if sent, says who is asking.",
  researcher: "Any signed-in person (researcher or admin), with their API token.",
  admin: "Admins only, with an admin's API token.",
};

type Procedure = {
  _def: { type: "query" | "mutation" | "subscription"; inputs: unknown[]; meta?: Meta };
};

type JsonSchema = Record<string, unknown>;

/** The JSON Schema of a procedure's input as a caller sends it (defaults make fields optional). */
function inputSchema(inputs: unknown[]): { schema: JsonSchema; required: boolean } | null {
  const schemas = inputs.filter((i): i is z.ZodType => i instanceof z.ZodType);
  if (schemas.length === 0) return null;
  const json = schemas.map((s) => {
    const { $schema: _, ...rest } = z.toJSONSchema(s, {
      io: "input",
      unrepresentable: "any",
      target: "draft-2020-12",
    }) as JsonSchema;
    return rest;
  });
  const required = schemas.every((s) => !s.safeParse(undefined).success);
  const schema: JsonSchema = json.length === 1 ? (json[0] as JsonSchema) : { allOf: json };
  return { schema, required };
}

/** superjson's envelope around a value: `{"json": value}` (`meta` only for Dates, Maps and such). */
const envelope = (value: JsonSchema): JsonSchema => ({
  type: "object",
  properties: {
    json: value,
    meta: {
      type: "object",
      description: "superjson's type annotations (Dates, bigints...); absent for plain JSON.",
    },
  },
  required: ["json"],
});

/** The error answers every procedure may give, described once under components.responses. */
const ERRORS = {
  "400": ["BadRequest", "The input is not valid (the message and `data.zodError` say why)."],
  "401": ["Unauthorized", "No token, or a token that is unknown, expired or revoked."],
  "403": ["Forbidden", "The token's owner may not do this (role, read-only token, quota)."],
  "404": ["NotFound", "What the input names does not exist."],
  "409": ["Conflict", "The current state does not allow it (see `data.domainCode`)."],
  "412": ["PreconditionFailed", "A precondition is not met (see `data.domainCode`)."],
  "429": ["TooManyRequests", "Too many calls: retry after the Retry-After header's seconds."],
} as const;

/** The document, built from appRouter's procedures (so a new procedure appears by itself). */
export function openApiDocument(serverUrl?: string) {
  const procedures = appRouter._def.procedures as unknown as Record<string, Procedure>;
  const paths: Record<string, Record<string, unknown>> = {};
  const tags = new Set<string>();
  for (const [path, proc] of Object.entries(procedures).sort(([a], [b]) => a.localeCompare(b))) {
    const { type, inputs, meta } = proc._def;
    const tier = meta?.tier;
    if (!tier || !DESCRIBED[tier] || type === "subscription") continue;
    const tag = path.split(".")[0] ?? path;
    tags.add(tag);
    const input = inputSchema(inputs);
    const secured = tier === "researcher" || tier === "admin";
    const operation: Record<string, unknown> = {
      operationId: path,
      tags: [tag],
      summary: meta?.description?.split(/(?<=\.)\s/)[0] ?? path,
      description: [
        meta?.description,
        `Who may call it: ${DESCRIBED[tier]}`,
        type === "mutation" && secured ? "A read-only token cannot call it (queries only)." : null,
      ]
        .filter(Boolean)
        .join("\n\n"),
      "x-lablink-tier": tier,
      security: secured ? [{ apiToken: [] }] : tier === "viewer" ? [{}, { apiToken: [] }] : [],
      responses: {
        "200": {
          description:
            "The procedure's answer in superjson's envelope: `result.data.json` is the value.",
          content: {
            "application/json": { schema: { $ref: "#/components/schemas/Result" } },
          },
        },
        ...Object.fromEntries(
          Object.entries(ERRORS).map(([status, [name]]) => [
            status,
            { $ref: `#/components/responses/${name}` },
          ]),
        ),
      },
    };
    if (type === "query") {
      if (input) {
        operation.parameters = [
          {
            name: "input",
            in: "query",
            required: input.required,
            description:
              'The input as URL-encoded JSON in superjson\'s envelope: `?input=` + encodeURIComponent(JSON.stringify({"json": input})).',
            content: { "application/json": { schema: envelope(input.schema) } },
          },
        ];
      }
      paths[`/api/trpc/${path}`] = { get: operation };
    } else {
      if (input) {
        operation.requestBody = {
          required: input.required,
          content: { "application/json": { schema: envelope(input.schema) } },
        };
      }
      paths[`/api/trpc/${path}`] = { post: operation };
    }
  }

  return {
    openapi: "3.1.0",
    info: {
      title: "LabLink API",
      version: "1",
      description:
        "LabLink's tRPC procedures over plain HTTP, for scripts and other tools (docs/operations.md, " +
        '"Automation: the CLI and the HTTP API"). Authenticate with a personal API token ' +
        "(Profile → API tokens): `Authorization: Bearer llk_...`. Inputs and answers travel in " +
        'superjson\'s envelope `{"json": ...}`. Procedures for VM agents and for managing API ' +
        "tokens (a signed-in session only) are not listed.",
    },
    ...(serverUrl ? { servers: [{ url: serverUrl }] } : {}),
    tags: [...tags].sort().map((name) => ({ name })),
    paths,
    components: {
      responses: Object.fromEntries(
        Object.values(ERRORS).map(([name, description]) => [
          name,
          {
            description,
            content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
          },
        ]),
      ),
      securitySchemes: {
        apiToken: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "llk_<token id>_<secret>",
          description:
            "A personal API token from Profile → API tokens (or `lablink token create`); a read-only token may call queries only.",
        },
      },
      schemas: {
        Result: {
          type: "object",
          properties: {
            result: {
              type: "object",
              properties: { data: envelope({ description: "The procedure's answer." }) },
              required: ["data"],
            },
          },
          required: ["result"],
        },
        Error: {
          type: "object",
          properties: {
            error: {
              type: "object",
              properties: {
                json: {
                  type: "object",
                  properties: {
                    message: { type: "string", description: "Written for the person reading it." },
                    code: { type: "integer", description: "JSON-RPC error code." },
                    data: {
                      type: "object",
                      properties: {
                        code: { type: "string", description: "tRPC code, e.g. FORBIDDEN." },
                        httpStatus: { type: "integer" },
                        path: { type: "string" },
                        domainCode: {
                          type: ["string", "null"],
                          description: "LabLink's own code, e.g. NO_CAPACITY, QUOTA_EXCEEDED.",
                        },
                        details: { type: ["object", "null"] },
                      },
                    },
                  },
                  required: ["message"],
                },
              },
              required: ["json"],
            },
          },
          required: ["error"],
        },
      },
    },
  };
}

let cached: string | null = null;

/** The document as JSON text, built once per process (the router does not change while it runs). */
export function openApiJson(): string {
  cached ??= JSON.stringify(openApiDocument());
  return cached;
}
