import http from "node:http";
import type { AddressInfo } from "node:net";
import { createHTTPHandler } from "@trpc/server/adapters/standalone";
import type postgres from "postgres";
import { type GatewayContext, serveAgentCall } from "../server/api/agent-gateway";
import { DesktopRelay } from "../server/api/desktop-relay";
import { handleTrpc } from "../server/api/handler";
import { serveOriginalApi } from "../server/api/original-api";
import { appRouter } from "../server/api/root";
import type { SessionUser } from "../server/api/trpc";
import { serveWorkUpload } from "../server/api/work-export";
import type { Db } from "../server/db/client";
import { VmEventHub, type VmEventHubOptions } from "../server/events";
import { prepareRequestHeaders, type TrustProxy } from "../server/http";

/**
 * Serves the real router at /api/trpc on a loopback port for tests that need real HTTP clients
 * (agent processes). Agent calls go through the agent gateway as in production (server/web.ts);
 * everything else through tRPC's own Node adapter instead of Next. The router, context shape, auth
 * tiers and event hub are the same.
 */
export async function startApiServer(
  db: Db,
  sql: postgres.Sql,
  heartbeatIntervalS: number,
  /** A fixed port, to restart a server where its agents expect it. */
  port = 0,
  hubOptions: VmEventHubOptions = {},
  /** Serve browser desktops (server/api/desktop-relay.ts) with sessions signed by this secret. */
  desktop?: { authSecret: string; pairTimeoutMs?: number },
) {
  const events = new VmEventHub(sql, hubOptions);
  const settings = { heartbeatIntervalS };
  const getSession = async (): Promise<SessionUser | null> => null;
  const handler = createHTTPHandler({
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
        settings,
        signal: info.signal,
        getSession,
      };
    },
  });
  const server = http.createServer((req, res) => {
    prepareRequestHeaders(req.headers, req.socket.remoteAddress, { kind: "none" });
    if (serveAgentCall(req, res, () => ({ db, events, settings, getSession }))) return;
    if (serveOriginalApi(req, res, () => ({ db, events, settings, getSession }))) return;
    if (serveWorkUpload(req, res, () => ({ db, events }))) return;
    handler(req, res);
  });
  const desktops = desktop ? new DesktopRelay({ db, events, ...desktop }) : null;
  if (desktops) {
    server.on("upgrade", (req, socket, head) => {
      prepareRequestHeaders(req.headers, req.socket.remoteAddress, { kind: "none" });
      if (!desktops.handleUpgrade(req, socket, head)) socket.destroy();
    });
  }
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  const bound = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${bound}`,
    port: bound,
    events,
    desktops,
    close: async () => {
      desktops?.closeAll();
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      await events.close();
    },
  };
}

/**
 * The production host minus Next: a Node HTTP server that answers agent calls through the agent
 * gateway when `gateway` is on (as server/web.ts does) and hands everything else, as a fetch
 * Request, to the handler the Next route uses. `fallbackCalls` counts what reached that handler.
 */
export async function startFetchApiServer(
  context: GatewayContext,
  options: {
    gateway: boolean;
    /** Default: as if behind a TLS proxy on this host (its X-Forwarded-Proto counts). */
    trustProxy?: TrustProxy;
  },
) {
  let fallbackCalls = 0;
  const trust = options.trustProxy ?? { kind: "list", entries: ["127.0.0.1"] };
  const server = http.createServer((req, res) => {
    prepareRequestHeaders(req.headers, req.socket.remoteAddress, trust);
    if (options.gateway && serveAgentCall(req, res, () => context)) return;
    fallbackCalls++;
    void answerWithFetchHandler(req, res, context);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    fallbackCalls: () => fallbackCalls,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Answers a Node request through the tRPC fetch handler (what the Next route runs): the request
 * becomes a fetch Request, the Response is written back with its Content-Length.
 */
export async function answerWithFetchHandler(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  context: GatewayContext,
): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
  const hasBody = req.method !== "GET" && req.method !== "HEAD";
  const response = await handleTrpc(
    new Request(`http://localhost${req.url}`, {
      method: req.method,
      headers,
      body: hasBody ? Buffer.concat(chunks) : undefined,
    }),
    () => context,
  );
  const body = Buffer.from(await response.arrayBuffer());
  res.writeHead(response.status, {
    ...Object.fromEntries(response.headers),
    "content-length": body.length,
  });
  res.end(body);
}
