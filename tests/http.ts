import type { AddressInfo } from "node:net";
import { createHTTPServer } from "@trpc/server/adapters/standalone";
import type postgres from "postgres";
import { appRouter } from "../server/api/root";
import type { SessionUser } from "../server/api/trpc";
import type { Db } from "../server/db/client";
import { VmEventHub } from "../server/events";

/**
 * Serves the real router at /api/trpc on a loopback port for tests that need real HTTP clients
 * (agent processes). Only the host differs from production (Node's HTTP server instead of Next);
 * the router, context shape, auth tiers and event hub are the same.
 */
export async function startApiServer(
  db: Db,
  sql: postgres.Sql,
  heartbeatIntervalS: number,
  /** A fixed port, to restart a server where its agents expect it. */
  port = 0,
) {
  const events = new VmEventHub(sql);
  const server = createHTTPServer({
    router: appRouter,
    basePath: "/api/trpc/",
    createContext: ({ req, info }) => {
      const headers = new Headers();
      for (const [k, v] of Object.entries(req.headers))
        if (typeof v === "string") headers.set(k, v);
      return {
        db,
        headers,
        ip: req.socket.remoteAddress ?? null,
        events,
        settings: { heartbeatIntervalS },
        signal: info.signal,
        getSession: async (): Promise<SessionUser | null> => null,
      };
    },
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  const bound = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${bound}`,
    port: bound,
    events,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
