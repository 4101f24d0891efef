import { fetchRequestHandler } from "@trpc/server/adapters/fetch";
import { appRouter } from "./root";
import type { Context } from "./trpc";

/** Client IP from the proxy header chain, else null (Next does not expose the socket address). */
export function clientIp(headers: Headers): string | null {
  const forwarded = headers.get("x-forwarded-for")?.split(",")[0]?.trim();
  return forwarded || headers.get("x-real-ip") || null;
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
    createContext: () => ({
      ...makeContext(req),
      headers: req.headers,
      ip: clientIp(req.headers),
      signal: req.signal,
    }),
  });
}
