import { createTRPCClient, httpLink, TRPCClientError } from "@trpc/client";
import superjson from "superjson";
import type { AgentApi } from "../../server/api/routers/agent";
import { nodeHttpFetch } from "./http-fetch";
import { type AgentTransport, TransportError } from "./loop";
import { postExportChunk } from "./work-export-upload";

/** Maps whatever the tRPC client threw to the three kinds of failure the loop acts on. */
export function toTransportError(err: unknown): TransportError {
  if (err instanceof TransportError) return err;
  if (err instanceof TRPCClientError) {
    const data = err.data as { httpStatus?: number; code?: string } | null | undefined;
    const response = err.meta?.response as { status?: number } | undefined;
    const status = data?.httpStatus ?? response?.status;
    if (status === 401 || data?.code === "UNAUTHORIZED") {
      return new TransportError("unauthorized", err.message, { cause: err, status: 401 });
    }
    // No status: the request never got an HTTP answer (refused, DNS, reset, timeout) or the body
    // was not tRPC's (an HTML 502 from a proxy).
    if (status === undefined || status >= 500 || status === 429 || status === 408) {
      return new TransportError("unavailable", err.message, { cause: err, status });
    }
    return new TransportError("rejected", err.message, { cause: err, status });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new TransportError("unavailable", message, { cause: err });
}

/**
 * The real transport: tRPC v11 over HTTP at `${serverUrl}/api/trpc`, superjson, bearer token.
 * `httpLink` rather than a batch link: the long poll must not hold up heartbeats and acks.
 */
export function createTrpcTransport(options: {
  serverUrl: string;
  /** Called for every request, so a rotated token file is picked up. */
  token: () => string;
  /** When set, registration asks the server for a new token and hands it here. */
  onCredential?: (token: string) => void;
  fetch?: typeof fetch;
}): AgentTransport {
  const client = createTRPCClient<AgentApi>({
    links: [
      httpLink({
        url: `${options.serverUrl}/api/trpc`,
        transformer: superjson,
        headers: () => ({ authorization: `Bearer ${options.token()}` }),
        // Not the global fetch by default: see http-fetch.ts (undici costs ~10 MB of RSS).
        fetch: options.fetch ?? (nodeHttpFetch as unknown as typeof fetch),
      }),
    ],
  });

  const call = async <T>(request: () => Promise<T>): Promise<T> => {
    try {
      return await request();
    } catch (err) {
      throw toTransportError(err);
    }
  };

  return {
    register: async (input, signal) => {
      const rotate = options.onCredential;
      const reply = await call(() =>
        client.agent.register.mutate(rotate ? { ...input, rotateCredential: true } : input, {
          signal,
        }),
      );
      const { credential, ...rest } = reply;
      if (credential && rotate) rotate(credential);
      return rest;
    },
    rotate: options.onCredential
      ? async (input, signal) => {
          const { credential } = await call(() => client.agent.rotate.mutate(input, { signal }));
          options.onCredential?.(credential);
        }
      : undefined,
    heartbeat: (input, signal) => call(() => client.agent.heartbeat.mutate(input, { signal })),
    ack: async (input, signal) => {
      await call(() => client.agent.ack.mutate(input, { signal }));
    },
    poll: (input, signal) => call(() => client.agent.poll.query(input, { signal })),
    logs: (input, signal) => call(() => client.agent.logs.mutate(input, { signal })),
    uploadExport: (chunk, signal) =>
      postExportChunk(options.serverUrl, options.token(), chunk, signal),
  };
}
