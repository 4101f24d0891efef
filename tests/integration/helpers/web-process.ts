/**
 * A web process for the multi-process test: the production host minus Next (agent gateway, the
 * original API, the real tRPC router and a Postgres-backed event hub) in a process of its own, so
 * two of them share one database as two `server/web.ts` would. Sessions come from the
 * `x-test-user` header (as in tests/api/harness.ts): the test cannot sign in through Next here.
 * argv: <database url> <port> <heartbeat interval s>
 */
import http from "node:http";
import { createHTTPHandler } from "@trpc/server/adapters/standalone";
import { serveAgentCall } from "../../../server/api/agent-gateway";
import { serveOriginalApi } from "../../../server/api/original-api";
import { appRouter } from "../../../server/api/root";
import type { SessionUser } from "../../../server/api/trpc";
import { createDatabase } from "../../../server/db/client";
import { VmEventHub } from "../../../server/events";
import { prepareRequestHeaders } from "../../../server/http";

const [url, port, heartbeat] = process.argv.slice(2) as [string, string, string];
const { db, sql } = createDatabase(url, { max: 10 });
const events = new VmEventHub(sql);
const settings = { heartbeatIntervalS: Number(heartbeat) };
const noSession = async (): Promise<SessionUser | null> => null;

const handler = createHTTPHandler({
  router: appRouter,
  basePath: "/api/trpc/",
  createContext: ({ req, info }) => {
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
    const user = headers.get("x-test-user");
    return {
      db,
      headers,
      ip: req.socket.remoteAddress ?? null,
      events,
      settings,
      signal: info.signal,
      getSession: async () => (user ? { id: user } : null),
    };
  },
});
const server = http.createServer((req, res) => {
  prepareRequestHeaders(req.headers, req.socket.remoteAddress, { kind: "none" });
  const context = () => ({ db, events, settings, getSession: noSession });
  if (serveAgentCall(req, res, context)) return;
  if (serveOriginalApi(req, res, context)) return;
  handler(req, res);
});
server.listen(Number(port), "127.0.0.1", () => {
  process.send?.({ type: "ready", pid: process.pid });
});
const stop = () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
};
process.on("SIGTERM", stop);
process.on("disconnect", stop);
