import { TRPCError } from "@trpc/server";
import { fetchRequestHandler } from "@trpc/server/adapters/fetch";
import { isDomainError } from "../domain/errors";
import { clientIp } from "../http";
import { MAX_BATCH_CALLS, MAX_BODY_BYTES } from "./request-limits";
import { appRouter } from "./root";
import type { Context } from "./trpc";

/** Client IPs are decided once, at the edge (server/http.ts). */
export { clientIp };

/** 429 answers carry Retry-After (seconds), from the domain error's details. */
export function retryAfterHeader(errors: readonly { cause?: unknown }[]): Record<string, string> {
  for (const e of errors) {
    const cause = e.cause;
    if (isDomainError(cause) && cause.code === "RATE_LIMITED") {
      return { "retry-after": String(cause.details.retryAfterS ?? 60) };
    }
  }
  return {};
}

/** The error for a body over MAX_BODY_BYTES (the agent gateway answers it too). */
export function payloadTooLarge(): TRPCError {
  return new TRPCError({
    code: "PAYLOAD_TOO_LARGE",
    message: `The request body is over the limit of ${MAX_BODY_BYTES} bytes.`,
  });
}

/**
 * The request with its body cut off at MAX_BODY_BYTES: past it (by Content-Length, or by bytes
 * counted as they stream in, for chunked bodies), reading the body fails with 413, which tRPC
 * answers in its own error format as it does for any input it cannot read.
 */
function withBodyLimit(req: Request): Request {
  if (!req.body) return req;
  const declared = Number(req.headers.get("content-length") ?? 0);
  let body: ReadableStream<Uint8Array>;
  if (declared > MAX_BODY_BYTES) {
    void req.body.cancel().catch(() => {});
    body = new ReadableStream({ start: (c) => c.error(payloadTooLarge()) });
  } else {
    let size = 0;
    body = req.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          size += chunk.byteLength;
          if (size > MAX_BODY_BYTES) controller.error(payloadTooLarge());
          else controller.enqueue(chunk);
        },
      }),
    );
  }
  return new Request(req.url, {
    method: req.method,
    headers: req.headers,
    body,
    signal: req.signal,
    // Node's fetch needs this for a streamed body.
    duplex: "half",
  } as RequestInit);
}

/**
 * Serves `/api/trpc` for any host (the Next route handler, tests). `makeContext` supplies the
 * database, session lookup and event hub.
 */
export function handleTrpc(
  req: Request,
  makeContext: (req: Request) => Omit<Context, "headers" | "ip" | "signal">,
): Promise<Response> {
  return fetchRequestHandler({
    endpoint: "/api/trpc",
    req: withBodyLimit(req),
    router: appRouter,
    maxBatchSize: MAX_BATCH_CALLS,
    responseMeta: ({ errors }) => ({ headers: retryAfterHeader(errors) }),
    createContext: () => ({
      ...makeContext(req),
      headers: req.headers,
      ip: clientIp(req.headers),
      signal: req.signal,
    }),
  });
}
