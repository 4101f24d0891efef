import { createTRPCClient, httpBatchLink, TRPCClientError } from "@trpc/client";
import superjson from "superjson";
import type { AppRouter } from "../server/api/root";

export type Api = ReturnType<typeof createTRPCClient<AppRouter>>;

/** A caller's mistake in how the CLI was run (missing URL or token, bad flag): exit code 2. */
export class UsageError extends Error {}

/** The server's tRPC API, authenticated with a personal API token. */
export function apiClient(url: string, token: string): Api {
  const base = url.replace(/\/+$/, "");
  return createTRPCClient<AppRouter>({
    links: [
      httpBatchLink({
        url: `${base}/api/trpc`,
        transformer: superjson,
        headers: () => ({ authorization: `Bearer ${token}`, "user-agent": "lablink-cli" }),
      }),
    ],
  });
}

/** What to print for an error: the server's own message, with each invalid field. */
export function describeError(err: unknown, url: string | undefined): string {
  if (err instanceof TRPCClientError) {
    const data = err.data as
      | { code?: string; httpStatus?: number; fieldErrors?: { path: string; message: string }[] }
      | undefined;
    if (!data) {
      // fetch hides the reason (ECONNREFUSED, ENOTFOUND...) a few causes down.
      let cause: unknown = err.cause;
      let reason = err.message;
      for (let i = 0; cause && i < 5; i++, cause = (cause as { cause?: unknown }).cause) {
        const c = cause as { code?: unknown; message?: unknown };
        if (typeof c.code === "string") reason = c.code;
        else if (typeof c.message === "string" && i > 0) reason = c.message;
        else if (Array.isArray((cause as { errors?: unknown }).errors)) {
          const first = (cause as { errors: { code?: unknown }[] }).errors[0];
          if (typeof first?.code === "string") reason = first.code;
        }
      }
      return `cannot reach LabLink at ${url}: ${reason}`;
    }
    if (data.fieldErrors?.length) {
      return [
        "the server refused the input:",
        ...data.fieldErrors.map((f) => `  ${f.path || "(input)"}: ${f.message}`),
      ].join("\n");
    }
    return err.message;
  }
  return err instanceof Error ? err.message : String(err);
}
