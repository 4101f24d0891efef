import type { Agent as HttpAgent, IncomingMessage, RequestOptions } from "node:http";

/**
 * The part of `fetch` the tRPC client uses (method, headers, string body, signal; status and a
 * JSON body back), on node:http / node:https.
 *
 * Why not the global `fetch`: in Node 20 it loads undici on first use, which costs the agent about
 * 10 MB of RSS — a sixth of its 60 MB budget — for nothing it needs. Keep-alive connections, a
 * bounded response body, and an AbortSignal that ends the request (the long poll relies on it).
 */
export type MinimalResponse = {
  ok: boolean;
  status: number;
  statusText: string;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
  json(): Promise<unknown>;
};

type MinimalInit = {
  method?: string;
  headers?: Record<string, string> | [string, string][];
  body?: unknown;
  signal?: AbortSignal | null;
};

/** Responses larger than this are cut off with an error (the server's replies are small). */
export const MAX_RESPONSE_BYTES = 8 * 1024 * 1024;

type Module = typeof import("node:http");
const modules: { http?: Promise<[Module, HttpAgent]>; https?: Promise<[Module, HttpAgent]> } = {};

/** node:https (and TLS) is loaded only for an https server. */
function transportFor(protocol: string): Promise<[Module, HttpAgent]> {
  if (protocol === "https:") {
    modules.https ??= import("node:https").then((m) => [
      m as unknown as Module,
      new m.Agent({ keepAlive: true, maxSockets: 8 }),
    ]);
    return modules.https;
  }
  if (protocol !== "http:") return Promise.reject(new TypeError(`unsupported URL: ${protocol}`));
  modules.http ??= import("node:http").then((m) => [
    m,
    new m.Agent({ keepAlive: true, maxSockets: 8 }),
  ]);
  return modules.http;
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  const err = new Error("This operation was aborted");
  err.name = "AbortError";
  return err;
}

export async function nodeHttpFetch(
  input: string | URL | { url: string },
  init: MinimalInit = {},
): Promise<MinimalResponse> {
  const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
  const signal = init.signal ?? undefined;
  if (signal?.aborted) throw abortError(signal);
  const [mod, agent] = await transportFor(url.protocol);
  const headers: Record<string, string> = Array.isArray(init.headers)
    ? Object.fromEntries(init.headers)
    : { ...(init.headers ?? {}) };
  let body: Buffer | undefined;
  if (init.body !== undefined && init.body !== null) {
    if (typeof init.body !== "string") throw new TypeError("only string bodies are supported");
    body = Buffer.from(init.body);
    headers["content-length"] = String(body.length);
  }
  const options: RequestOptions = {
    method: init.method ?? "GET",
    headers,
    agent,
    ...(signal ? { signal } : {}),
  };

  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = mod.request(url, options, resolve);
    req.on("error", (err) => reject(signal?.aborted ? abortError(signal) : err));
    req.end(body);
  });

  let text: Promise<string> | null = null;
  const readBody = () => {
    text ??= new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_RESPONSE_BYTES) {
          // Reject first: destroying the stream also emits "aborted".
          reject(new Error(`response larger than ${MAX_RESPONSE_BYTES} bytes`));
          res.destroy();
          return;
        }
        chunks.push(chunk);
      });
      res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
      res.on("error", (err) => reject(signal?.aborted ? abortError(signal) : err));
      res.on("aborted", () => reject(signal ? abortError(signal) : new Error("aborted")));
    });
    return text;
  };
  const status = res.statusCode ?? 0;
  return {
    ok: status >= 200 && status < 300,
    status,
    statusText: res.statusMessage ?? "",
    headers: {
      get: (name) => {
        const v = res.headers[name.toLowerCase()];
        return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
      },
    },
    text: readBody,
    json: async () => JSON.parse(await readBody()) as unknown,
  };
}
