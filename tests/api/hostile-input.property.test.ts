import { eq } from "drizzle-orm";
import fc from "fast-check";
import superjson from "superjson";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { handleTrpc } from "../../server/api/handler";
import { appRouter } from "../../server/api/root";
import type { SessionUser } from "../../server/api/trpc";
import { DEFAULT_RATE_LIMITS } from "../../server/auth/rate-limit";
import { users } from "../../server/db/schema";
import { flushHeartbeatBuffers } from "../../server/domain/heartbeat-buffer";
import { createTestDatabase, type TestDatabase } from "../db";
import { startFetchApiServer } from "../http";
import { ALLOWED, makeWorld, PRINCIPALS, type Principal, type PrincipalAuth } from "./principals";
import { ACCESS, allProcedures, SAMPLE_INPUT, type World } from "./procedures";

/**
 * Property: whatever a caller sends to any procedure, the answer is a success or a 4xx JSON error,
 * never a 5xx; and a refused call changes nothing in the database.
 *
 * Walks the router like the authorization matrix. Each run takes the procedure's valid sample
 * input and makes it hostile (a field replaced, a field added, the whole input replaced, or the
 * superjson envelope tampered with), picks a caller and sends it through the real HTTP handlers:
 * the fetch handler of the Next route and, for agent procedures, the agent gateway.
 *
 * Fixed seed and bounded runs, so `npm test` is repeatable; on failure fast-check prints the seed,
 * the path and the counterexample. Replay or explore with LABLINK_FC_SEED / LABLINK_FC_RUNS.
 */
const SEED = Number(process.env.LABLINK_FC_SEED ?? 20_261_210);
const RUNS = Number(process.env.LABLINK_FC_RUNS ?? 16);

let t: TestDatabase;
let world: World;
let auth: Record<Principal, PrincipalAuth>;
let gateway: Awaited<ReturnType<typeof startFetchApiServer>>;
let fingerprintSql: string;

const settings = {
  heartbeatIntervalS: 15,
  // A configured server: generated terraform fleets are created, not refused for a missing image.
  agentImage: "registry.example.edu/lablink/lablink-agent:0.1.0",
  // Generated calls are many; the limits are tested elsewhere and would only add 429s here.
  rateLimits: Object.fromEntries(
    Object.entries(DEFAULT_RATE_LIMITS).map(([k, v]) => [k, { ...v, limit: 1_000_000 }]),
  ) as typeof DEFAULT_RATE_LIMITS,
};

beforeAll(async () => {
  t = await createTestDatabase();
  ({ world, auth } = await makeWorld(t.db));
  gateway = await startFetchApiServer(
    { db: t.db, events: null, settings, getSession: async () => null },
    { gateway: true },
  );
  // Every application table except the rate-limit windows, which count refused calls on purpose,
  // and an API token's last use, which records that the token authenticated (whatever the input).
  const tables = await t.sql<{ name: string }[]>`
    SELECT table_name AS name FROM information_schema.tables
    WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'rate_limits'
    ORDER BY table_name`;
  fingerprintSql = `SELECT ${tables
    .map(
      ({ name }) =>
        `(SELECT md5(coalesce(string_agg(${name === "api_tokens" ? "(to_jsonb(r) - 'last_used_at')::text" : "r::text"}, '|' ORDER BY r::text), '')) FROM "${name}" r) AS "${name}"`,
    )
    .join(", ")}`;
});
afterAll(async () => {
  await gateway?.close();
  await t?.drop();
});

async function fingerprint(): Promise<Record<string, string>> {
  const [row] = await t.sql.unsafe(fingerprintSql);
  return row as Record<string, string>;
}

/** A hostile value, printed by its label (not its megabytes) in a counterexample. */
class Hostile {
  constructor(
    readonly label: string,
    readonly make: () => unknown,
    /**
     * make() returns JSON text, sent as is: neither superjson nor JSON.stringify would write it
     * (too deep, or a "__proto__" key).
     */
    readonly raw = false,
  ) {}
  [fc.toStringMethod]() {
    return this.label;
  }
}
const h = (label: string, make: () => unknown, raw = false) => new Hostile(label, make, raw);

const nested = (depth: number, array: boolean) =>
  array
    ? `${"[".repeat(depth)}1${"]".repeat(depth)}`
    : `${'{"a":'.repeat(depth)}"x"${"}".repeat(depth)}`;

const hostileValue: fc.Arbitrary<Hostile> = fc.oneof(
  fc.string({ maxLength: 8 }).map((s) => h(`${JSON.stringify(s)} + NUL`, () => `${s}\u0000x`)),
  fc.constantFrom(
    h("NUL", () => "\u0000"),
    h("lone high surrogate", () => "a\ud800"),
    h("lone low surrogate", () => "\udc00b"),
    h("5 KB string", () => "x".repeat(5_000)),
    h("70 KB string", () => "é".repeat(70_000)),
    h("1.1 MB string", () => "x".repeat(1_100_000)),
    h("2^31", () => 2 ** 31),
    h("-2^31-1", () => -(2 ** 31) - 1),
    h("2^53+2", () => 2 ** 53 + 2),
    h("1e308", () => 1e308),
    h("-1e308", () => -1e308),
    h("5e-324", () => 5e-324),
    h("-0", () => -0),
    h("NaN", () => Number.NaN),
    h("Infinity", () => Number.POSITIVE_INFINITY),
    h("-Infinity", () => Number.NEGATIVE_INFINITY),
    h("0.5", () => 0.5),
    h("max Date", () => new Date(8.64e15)),
    h("min Date", () => new Date(-8.64e15)),
    h("year 300000-ish Date", () => new Date(Date.UTC(275_000, 0, 1))),
    h("year -5000 Date", () => new Date(Date.UTC(-5000, 0, 1))),
    h("invalid Date", () => new Date(Number.NaN)),
    h("BigInt 2^70", () => 2n ** 70n),
    h("Map", () => new Map([["a", 1]])),
    h("Set", () => new Set([1, 2])),
    h("RegExp", () => /x/g),
    h("undefined", () => undefined),
    h("null", () => null),
    h("Error", () => new Error("boom")),
    h("URL", () => new URL("http://x/")),
    h("object nested 60 deep", () => nested(60, false), true),
    h("object nested 5000 deep", () => nested(5_000, false), true),
    h("array nested 5000 deep", () => nested(5_000, true), true),
    h("array nested 200000 deep", () => nested(200_000, true), true),
    h("object with 20000 keys", () =>
      Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, i])),
    ),
    h("array of 50000 items", () => Array.from({ length: 50_000 }, (_, i) => i)),
    h("object with __proto__ key", () => '{"__proto__":{"polluted":1}}', true),
  ),
  fc.double().map((d) => h(`double ${d}`, () => d)),
  fc.integer({ min: -(2 ** 40), max: 2 ** 40 }).map((n) => h(`int ${n}`, () => n)),
  fc.bigInt().map((n) => h(`BigInt ${n}`, () => n)),
  fc.date({ noInvalidDate: false }).map((d) => h(`Date ${d.getTime()}`, () => d)),
  fc.string({ unit: "binary", maxLength: 12 }).map((s) => h(JSON.stringify(s), () => s)),
  fc
    .anything({
      maxDepth: 3,
      withBigInt: true,
      withDate: true,
      withMap: true,
      withSet: true,
      withNullPrototype: true,
      withUnicodeString: true,
    })
    .map((v) => h(fc.stringify(v), () => v)),
);

/** superjson type annotations, real and made up, to put on any path of the envelope. */
const annotation = fc.constantFrom(
  ["bigint"],
  ["Date"],
  ["regexp"],
  ["set"],
  ["map"],
  ["undefined"],
  ["number"],
  ["Error"],
  ["URL"],
  ["symbol", "x"],
  ["class", "Nope"],
  ["custom", "nope"],
  ["typed-array", "Int8Array"],
  ["nonsense"],
  "Date",
  42,
);

type Mutation =
  | { kind: "replace"; at: number; value: Hostile }
  | { kind: "add"; key: string; value: Hostile }
  | { kind: "whole"; value: Hostile }
  | { kind: "meta"; at: number; annotation: unknown }
  | { kind: "raw"; body: string };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("replace" as const),
      at: fc.nat(),
      value: hostileValue,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("add" as const),
      key: fc.oneof(fc.constantFrom("extra", "__proto__", "constructor", "", "a.b"), fc.string()),
      value: hostileValue,
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("whole" as const), value: hostileValue }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("meta" as const), at: fc.nat(), annotation }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("raw" as const),
      body: fc.oneof(
        fc.constantFrom(
          "{not json",
          "",
          "null",
          "[]",
          '"str"',
          "1e999",
          '{"json":"x","meta":{"values":["bigint"]}}',
          '{"json":"2020-13-45","meta":{"values":["Date"]}}',
          '{"json":null,"meta":{"values":["custom","nope"]}}',
          '{"json":{},"meta":{"values":{"a.b.c":["Date"]}}}',
          '{"json":{"a":1},"meta":{"values":{"__proto__":["Date"]}}}',
          '{"json":{"a":1},"meta":{"referentialEqualities":{"a":["b.c"]}}}',
          '{"json":1,"meta":"nope"}',
          '{"json":[1],"meta":{"values":[["map"]]}}',
          '{"json":"\\u0000","meta":{"values":["regexp"]}}',
        ),
        fc.json(),
      ),
    }),
  },
);

/** The paths of an input's fields, parents before children (index 0: the input itself). */
function fieldPaths(value: unknown, prefix: string[] = []): string[][] {
  const out = [prefix];
  if (value && typeof value === "object" && !(value instanceof Date)) {
    for (const [k, v] of Object.entries(value)) out.push(...fieldPaths(v, [...prefix, k]));
  }
  return out;
}

type Envelope = { json: unknown; meta?: { values?: unknown } };

const escapeKey = (key: string) => key.replaceAll(".", "\\.");

/** A hostile value as superjson's wire format, built by hand where superjson would refuse. */
function serialize(value: Hostile): Envelope {
  return value.raw ? { json: RAW } : (superjson.serialize(value.make()) as Envelope);
}

/** Stands for a raw value in an envelope until it is written out as text. */
const RAW = "@@raw hostile value@@";
const write = (envelope: Envelope, value: Hostile | null) => {
  const text = JSON.stringify(envelope);
  return value?.raw ? text.replace(JSON.stringify(RAW), () => value.make() as string) : text;
};

/**
 * The sample's envelope with `value` put at `path` (added when absent): JSON and type annotations
 * grafted by hand, since a client need not use superjson to send its wire format.
 */
function graft(sample: unknown, path: string[], value: Hostile): Envelope {
  if (path.length === 0) return serialize(value);
  const base = superjson.serialize(sample && typeof sample === "object" ? sample : {}) as Envelope;
  const added = serialize(value);
  const json = structuredClone(base.json) as Record<string, unknown>;
  let node = json;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string, unknown>;
  // defineProperty: "__proto__" must become an own key, as JSON.parse on the server makes it.
  Object.defineProperty(node, path[path.length - 1] as string, {
    value: added.json ?? null,
    enumerable: true,
    configurable: true,
    writable: true,
  });
  const at = path.map(escapeKey).join(".");
  const values: Record<string, unknown> = {};
  for (const [p, a] of Object.entries((base.meta?.values as object | undefined) ?? {})) {
    if (p !== at && !p.startsWith(`${at}.`)) values[p] = a;
  }
  const inner = added.meta?.values;
  if (Array.isArray(inner)) values[at] = inner;
  else for (const [p, a] of Object.entries(inner ?? {})) values[`${at}.${p}`] = a;
  return { json, meta: { values } };
}

/** The top-level field names a procedure's input schema declares (through optional/default). */
function declaredFields(path: string): string[] {
  const procs = appRouter._def.procedures as unknown as Record<
    string,
    { _def: { inputs: unknown[] } }
  >;
  const keysOf = (schema: unknown): string[] => {
    const s = schema as
      | { shape?: object; _zod?: { def?: { innerType?: unknown; in?: unknown } } }
      | undefined;
    if (!s) return [];
    if (s.shape) return Object.keys(s.shape);
    return keysOf(s._zod?.def?.innerType ?? s._zod?.def?.in);
  };
  return procs[path]?._def.inputs.flatMap(keysOf) ?? [];
}

/** The request body (or `?input=`) text for a mutated sample input. */
function encode(sample: unknown, fields: string[], m: Mutation): string {
  switch (m.kind) {
    case "replace": {
      // Any field of the sample, or any field the schema declares (optional ones included).
      const paths = [...fieldPaths(superjson.serialize(sample).json), ...fields.map((f) => [f])];
      return write(graft(sample, paths[m.at % paths.length] ?? [], m.value), m.value);
    }
    case "add":
      return write(graft(sample, [m.key], m.value), m.value);
    case "whole":
      return write(serialize(m.value), m.value);
    case "meta": {
      const { json, meta } = superjson.serialize(sample);
      const paths = fieldPaths(json);
      const at = paths[m.at % paths.length] ?? [];
      const values =
        at.length === 0 ? m.annotation : { [at.map(escapeKey).join(".")]: m.annotation };
      return write({ json: json ?? null, meta: { ...meta, values } }, null);
    }
    case "raw":
      return m.body;
  }
}

const makeContext = (req: Request) => ({
  db: t.db,
  events: null,
  settings,
  getSession: async (): Promise<SessionUser | null> => {
    const id = req.headers.get("x-test-user");
    if (!id) return null;
    const [u] = await t.db.select().from(users).where(eq(users.id, id));
    return u ? { id: u.id, role: u.role } : null;
  },
});

type Answer = { status: number; text: string };

async function send(
  via: "next" | "gateway",
  type: "query" | "mutation",
  path: string,
  body: string,
  who: PrincipalAuth,
): Promise<Answer> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (who.userId) headers["x-test-user"] = who.userId;
  if (who.authorization) headers.authorization = who.authorization;
  const query = type === "query" && body !== "" ? `?input=${encodeURIComponent(body)}` : "";
  const init: RequestInit = type === "query" ? { headers } : { method: "POST", headers, body };
  if (via === "gateway") {
    const res = await fetch(`${gateway.url}/api/trpc/${path}${query}`, init);
    return { status: res.status, text: await res.text() };
  }
  const res = await handleTrpc(
    new Request(`http://localhost/api/trpc/${path}${query}`, init),
    makeContext,
  );
  return { status: res.status, text: await res.text() };
}

const procedures = allProcedures();

describe("hostile input (property-based)", () => {
  for (const [index, { path, type }] of procedures.entries()) {
    if (type === "subscription") continue;
    it(`${path}: never a 5xx, and a refused call writes nothing`, async () => {
      const sampleOf = SAMPLE_INPUT[path];
      expect(sampleOf, `${path} has no sample input in tests/api/procedures.ts`).toBeDefined();
      if (!sampleOf) return;
      // Long requests through a real socket would meet Node's header limit (431) before any
      // code of ours: GET inputs past a few KB go through the fetch handler only.
      const fields = declaredFields(path);
      const transports = path.startsWith("agent.")
        ? (["next", "gateway"] as const)
        : (["next"] as const);
      await fc.assert(
        fc.asyncProperty(
          // Mostly callers the tier lets in: only their input gets past the access check.
          fc.oneof(
            { weight: 3, arbitrary: fc.constantFrom(...ALLOWED[ACCESS[path] ?? "admin"]) },
            { weight: 1, arbitrary: fc.constantFrom(...PRINCIPALS) },
          ),
          fc.constantFrom(...transports),
          mutation,
          async (who, via, m) => {
            const body = encode(sampleOf(world), fields, m);
            const route = type === "query" && body.length > 8_000 ? "next" : via;
            // Heartbeats an earlier case was allowed to send are written up to a second later:
            // write them now, so that only this call can change the fingerprint.
            await flushHeartbeatBuffers();
            const before = await fingerprint();
            const res = await send(route, type, path, body, auth[who]);
            const summary = `${path} as ${who} via ${route}: ${res.status} ${res.text.slice(0, 300)}`;
            expect(res.status, summary).toBeLessThan(500);
            if (res.status >= 400) {
              const parsed = JSON.parse(res.text) as {
                error?: { json?: { data?: { code?: string } } };
              };
              expect(parsed.error?.json?.data?.code, summary).toEqual(expect.any(String));
              await flushHeartbeatBuffers();
              expect(await fingerprint(), `${summary} changed the database`).toEqual(before);
            }
          },
        ),
        { seed: SEED + index, numRuns: RUNS, endOnFailure: true },
      );
    });
  }
});
