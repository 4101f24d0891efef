import type { IncomingMessage, ServerResponse } from "node:http";
import {
  callTRPCProcedure,
  getTRPCErrorFromUnknown,
  getTRPCErrorShape,
  TRPCError,
  transformTRPCResponse,
} from "@trpc/server";
import { getHTTPStatusCodeFromError } from "@trpc/server/http";
import { apiSecurityHeaders } from "../security-headers";
import { clientIp, payloadTooLarge, retryAfterHeader } from "./handler";
import { MAX_BODY_BYTES } from "./request-limits";
import { appRouter } from "./root";
import type { Context } from "./trpc";

/**
 * The agents' way in: `/api/trpc/agent.*` served straight from the Node HTTP server, in the tRPC
 * wire format, through the same router, middleware (token check, error mapping, logging) and
 * procedures as every other call, without the round trip through Next's router and the fetch
 * adapter's Request/Response objects. Agents call these procedures every few seconds from every
 * VM, so their per-call cost sets how many VMs one web process can serve (docs/benchmarks.md).
 *
 * Only the plain shapes agents send are served here: one procedure per request (the agent uses
 * tRPC's `httpLink`), a mutation by POST with a JSON body or a query by GET with `?input=`.
 * Anything else (batches, other methods or content types, unknown paths) returns false and goes
 * to the regular handler, which answers it exactly as before; so does every non-agent path.
 */
export type GatewayContext = Omit<Context, "headers" | "ip" | "signal">;

const PREFIX = "/api/trpc/";
const AGENT_PREFIX = `${PREFIX}agent.`;

const config = appRouter._def._config;
// At run time a flat map from "agent.heartbeat" to the procedure (its type says nested).
const procedures = appRouter._def.procedures as unknown as Record<
  string,
  { _def: { type: string } } | undefined
>;

const HTTP_HEADERS = apiSecurityHeaders(false);
const HTTPS_HEADERS = apiSecurityHeaders(true);

type Call = { path: string; type: "query" | "mutation"; search: string };

/** The call this gateway serves for a request, or null when the regular handler should. */
export function agentCall(method: string | undefined, url: string | undefined): Call | null {
  if (!url?.startsWith(AGENT_PREFIX)) return null;
  const q = url.indexOf("?");
  const path = url.slice(PREFIX.length, q < 0 ? undefined : q);
  const search = q < 0 ? "" : url.slice(q + 1);
  const type = procedures[path]?._def.type;
  if (type === "mutation" && method === "POST" && search === "") {
    return { path, type, search };
  }
  if (type === "query" && method === "GET" && /^input=[^&]*$/.test(search)) {
    return { path, type, search };
  }
  return null;
}

/** The body as text, refused with 413 past MAX_BODY_BYTES (declared, or counted as it streams). */
function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const tooLarge = () => {
      req.removeAllListeners("data");
      // Drain the rest so the connection can carry the answer.
      req.resume();
      reject(payloadTooLarge());
    };
    if (Number(req.headers["content-length"] ?? 0) > MAX_BODY_BYTES) {
      tooLarge();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        tooLarge();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (cause) {
    // As tRPC's own content-type parser answers it.
    throw new TRPCError({ code: "BAD_REQUEST", cause });
  }
}

/**
 * An input superjson cannot decode is answered as tRPC's fetch handler answers it (its `memo`
 * of the inputs): 400 with the decoder's message, not 500.
 */
function deserialize(rawInput: unknown): unknown {
  if (rawInput === undefined) return undefined;
  try {
    return config.transformer.input.deserialize(rawInput);
  } catch (cause) {
    throw new TRPCError({ code: "BAD_REQUEST", message: (cause as Error)?.message, cause });
  }
}

function requestHeaders(req: IncomingMessage): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (typeof value === "string") headers.set(name, value);
    else if (Array.isArray(value)) for (const v of value) headers.append(name, v);
  }
  return headers;
}

/**
 * Serves the request when it is an agent call (see above) and returns true; returns false, having
 * touched nothing, when the regular handler should serve it. `req.headers` must already carry
 * `x-lablink-peer` and have untrusted proxy headers removed (server/web.ts does both).
 */
export function serveAgentCall(
  req: IncomingMessage,
  res: ServerResponse,
  makeContext: () => GatewayContext,
): boolean {
  const call = agentCall(req.method, req.url);
  if (!call) return false;
  const contentType = req.headers["content-type"];
  if (call.type === "mutation" && contentType && !contentType.startsWith("application/json")) {
    return false;
  }
  void answer(call, req, res, makeContext);
  return true;
}

async function answer(
  call: Call,
  req: IncomingMessage,
  res: ServerResponse,
  makeContext: () => GatewayContext,
): Promise<void> {
  // A query (the long poll) whose caller went away before the answer stops waiting for it.
  // Mutations (heartbeats, the hot path) run to the end either way, and skip the bookkeeping.
  let signal: AbortSignal | undefined;
  if (call.type === "query") {
    const abort = new AbortController();
    res.once("close", () => {
      if (!res.writableFinished) abort.abort();
    });
    signal = abort.signal;
  }
  const headers = requestHeaders(req);
  const ctx: Context = { ...makeContext(), headers, ip: clientIp(headers), signal };
  let rawInput: unknown;
  let body: unknown;
  let status = 200;
  let extraHeaders: Record<string, string> = {};
  try {
    const text =
      call.type === "mutation"
        ? await readBody(req)
        : // Decoded like tRPC's own handler does (lenient about broken escapes).
          (new URLSearchParams(call.search).get("input") ?? "");
    if (text !== "") rawInput = parseJson(text);
    const data = await callTRPCProcedure({
      router: appRouter,
      path: call.path,
      type: call.type,
      ctx,
      signal,
      batchIndex: 0,
      getRawInput: async () => deserialize(rawInput),
    });
    // What transformTRPCResponse builds for a result, without its object spreads (hot path).
    body = { result: { data: config.transformer.output.serialize(data) } };
  } catch (cause) {
    const error = getTRPCErrorFromUnknown(cause);
    status = getHTTPStatusCodeFromError(error);
    extraHeaders = retryAfterHeader([error]);
    body = transformTRPCResponse(config, {
      error: getTRPCErrorShape({
        config,
        ctx,
        error,
        input: rawInput,
        path: call.path,
        type: call.type,
      }),
    });
  }
  if (res.destroyed) return;
  const json = JSON.stringify(body);
  res.writeHead(status, {
    ...(req.headers["x-forwarded-proto"] === "https" ? HTTPS_HEADERS : HTTP_HEADERS),
    ...extraHeaders,
    "content-type": "application/json",
    "content-length": Buffer.byteLength(json),
  });
  res.end(json);
}
