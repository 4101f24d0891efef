import superjson from "superjson";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { handleTrpc } from "../../server/api/handler";
import { INPUT_LIMITS } from "../../server/api/input-guard";
import { MAX_BATCH_CALLS, MAX_BODY_BYTES } from "../../server/api/request-limits";
import type { SessionUser } from "../../server/api/trpc";
import { createTestDatabase, type TestDatabase } from "../db";
import { apiClient, tableCounts } from "./harness";
import { makeWorld, type Principal, type PrincipalAuth } from "./principals";
import type { World } from "./procedures";

/**
 * Inputs that no schema should ever let through to Postgres, each refused with 400 naming the
 * field, and the request-size limits of /api/trpc. The property-based test
 * (hostile-input.property.test.ts) looks for more of the same at random.
 */
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

const deep = (depth: number): unknown => {
  let v: unknown = "x";
  for (let i = 0; i < depth; i++) v = { a: v };
  return v;
};

type Case = {
  what: string;
  type: "query" | "mutation";
  path: string;
  who: Principal;
  input: (w: World) => unknown;
  /** The field the error must name. */
  field: string;
};

const CASES: Case[] = [
  {
    what: "a NUL byte",
    type: "mutation",
    path: "vm.claim",
    who: "researcher",
    input: () => ({ instanceType: "a\u0000" }),
    field: "instanceType",
  },
  {
    what: "a NUL byte",
    type: "mutation",
    path: "group.create",
    who: "admin",
    input: () => ({ name: "na\u0000me" }),
    field: "name",
  },
  {
    what: "a NUL byte",
    type: "mutation",
    path: "enrollment.create",
    who: "admin",
    input: (w) => ({ fleetId: w.byoFleetId, label: "lab\u0000" }),
    field: "label",
  },
  {
    what: "a NUL byte",
    type: "mutation",
    path: "agent.enroll",
    who: "enrollment token",
    input: () => ({ hostname: "ws\u0000", agentVersion: "0.1.0", protocolVersion: 1 }),
    field: "hostname",
  },
  {
    // NULs are allowed (and replaced) in log messages only: tests/api/vm-logs.test.ts.
    what: "a NUL byte outside a log message",
    type: "mutation",
    path: "agent.logs",
    who: "agent of this VM",
    input: (w) => ({
      vmId: w.vmId,
      bootId: "boot\u0000",
      lines: [
        { at: "2026-11-27T07:00:00.000Z", source: "agent", level: "info", message: "a\u0000" },
      ],
    }),
    field: "bootId",
  },
  {
    what: "a lone surrogate",
    type: "mutation",
    path: "group.create",
    who: "admin",
    input: () => ({ name: "lab-\ud800" }),
    field: "name",
  },
  {
    what: "a lone surrogate",
    type: "mutation",
    path: "agent.heartbeat",
    who: "agent of this VM",
    input: (w) => ({
      vmId: w.vmId,
      bootId: "boot-1",
      gpus: [],
      health: { healthy: false, reasons: ["\udc00 broken"] },
      inUse: false,
      idleSince: null,
    }),
    field: "health.reasons.0",
  },
  {
    what: "a date past year 9999",
    type: "query",
    path: "audit.list",
    who: "admin",
    input: () => ({ from: new Date(8.64e15) }),
    field: "from",
  },
  {
    what: "a date before year 1",
    type: "query",
    path: "operation.list",
    who: "admin",
    input: () => ({ before: new Date(-8.64e15) }),
    field: "before",
  },
  {
    what: "an invalid date",
    type: "query",
    path: "audit.list",
    who: "admin",
    input: () => ({ to: new Date(Number.NaN) }),
    field: "to",
  },
  {
    what: "Infinity",
    type: "query",
    path: "usage.report",
    who: "admin",
    input: () => ({ days: Number.POSITIVE_INFINITY }),
    field: "days",
  },
  {
    what: "a huge string",
    type: "query",
    path: "vm.list",
    who: "admin",
    input: () => ({ search: "x".repeat(INPUT_LIMITS.maxStringLength + 1) }),
    field: "search",
  },
  {
    what: "a deeply nested object",
    type: "mutation",
    path: "group.create",
    who: "admin",
    input: () => ({ name: deep(200) }),
    field: "name",
  },
  {
    what: "a BigInt",
    type: "query",
    path: "usage.report",
    who: "admin",
    input: () => ({ days: 7n }),
    field: "days",
  },
  {
    what: "a Map",
    type: "mutation",
    path: "vm.claim",
    who: "researcher",
    input: () => ({ fleetId: new Map([["id", "x"]]) }),
    field: "fleetId",
  },
  {
    what: "a Set",
    type: "mutation",
    path: "group.setFleetGroups",
    who: "admin",
    input: (w) => ({ fleetId: w.byoFleetId, groupIds: new Set([w.groupId]) }),
    field: "groupIds",
  },
];

describe("hostile input", () => {
  for (const c of CASES) {
    it(`${c.path} refuses ${c.what} with 400 naming ${c.field}, writing nothing`, async () => {
      const before = await tableCounts(t.db);
      const send = c.type === "query" ? api.query : api.mutate;
      const res = await send(c.path, c.input(world), auth[c.who]);
      expect(res.status, JSON.stringify(res.error)?.slice(0, 500)).toBe(400);
      expect(res.error?.data.code).toBe("BAD_REQUEST");
      expect(res.error?.message).toContain(c.field.split(".")[0]);
      const fieldErrors = res.error?.data.fieldErrors as { path: string }[] | undefined;
      expect(fieldErrors?.map((e) => e.path)).toContainEqual(
        expect.stringMatching(new RegExp(`^${c.field.replaceAll(".", "\\.")}`)),
      );
      expect(await tableCounts(t.db)).toEqual(before);
    });
  }

  it("still accepts the longest legitimate inputs", async () => {
    const lines = Array.from({ length: 500 }, (_, i) => ({
      at: new Date(Date.UTC(2026, 10, 27, 7, 0, i % 60)).toISOString(),
      source: "agent",
      level: "info",
      // 3 bytes in UTF-8 each: the most a log line of LOG_LINE_MAX characters can weigh.
      message: `${i} ${"界".repeat(4_000)}`,
    }));
    const res = await api.mutate(
      "agent.logs",
      { vmId: world.vmId, bootId: "boot-1", lines },
      auth["agent of this VM"],
    );
    expect(res.status, JSON.stringify(res.error)?.slice(0, 500)).toBe(200);
  });
});

const context = {
  events: null,
  settings: { heartbeatIntervalS: 15 },
  getSession: async (): Promise<SessionUser | null> => null,
};

function trpc(path: string, init?: RequestInit) {
  return handleTrpc(new Request(`http://localhost/api/trpc/${path}`, init), () => ({
    ...context,
    db: t.db,
  }));
}

describe("request limits on /api/trpc", () => {
  const body = (bytes: number) =>
    JSON.stringify(superjson.serialize({ name: "x".repeat(bytes) })).padEnd(bytes, " ");

  it("refuses a body over the limit by its Content-Length with 413", async () => {
    const before = await tableCounts(t.db);
    const text = body(MAX_BODY_BYTES + 1);
    const res = await trpc("group.create", {
      method: "POST",
      headers: { "content-type": "application/json", "content-length": String(text.length) },
      body: text,
    });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({
      error: { json: { data: { code: "PAYLOAD_TOO_LARGE", httpStatus: 413 } } },
    });
    expect(await tableCounts(t.db)).toEqual(before);
  });

  it("refuses a streamed (chunked) body over the limit with 413, counting its bytes", async () => {
    const chunk = new TextEncoder().encode("x".repeat(64 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent > MAX_BODY_BYTES * 4) controller.close();
        else {
          sent += chunk.byteLength;
          controller.enqueue(chunk);
        }
      },
    });
    const res = await trpc("group.create", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: stream,
      duplex: "half",
    } as RequestInit);
    expect(res.status).toBe(413);
    // It stopped reading soon after the limit, not at the end of the stream.
    expect(sent).toBeLessThan(MAX_BODY_BYTES * 2);
  });

  it(`answers a batch of ${MAX_BATCH_CALLS} calls, and refuses a longer one with 400`, async () => {
    const batch = (n: number) =>
      trpc(`${Array.from({ length: n }, () => "pool.summary").join(",")}?batch=1&input={}`);
    const ok = await batch(MAX_BATCH_CALLS);
    expect(ok.status).toBe(200);
    expect((await ok.json()) as unknown[]).toHaveLength(MAX_BATCH_CALLS);
    const refused = await batch(MAX_BATCH_CALLS + 1);
    expect(refused.status).toBe(400);
    expect(JSON.stringify(await refused.json())).toContain("BAD_REQUEST");
  });
});
