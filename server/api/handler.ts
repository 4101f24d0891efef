import { fetchRequestHandler } from "@trpc/server/adapters/fetch";
import { isDomainError } from "../domain/errors";
import { clientIp } from "../http";
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
    req,
    router: appRouter,
    responseMeta: ({ errors }) => ({ headers: retryAfterHeader(errors) }),
    createContext: () => ({
      ...makeContext(req),
      headers: req.headers,
      ip: clientIp(req.headers),
      signal: req.signal,
    }),
  });
}
