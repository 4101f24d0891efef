/**
 * The server side of bench/heartbeat.ts, run as its own process so that its CPU and memory are
 * measured apart from the simulated agents. Agent calls are served the way server/web.ts serves
 * them: by the agent gateway (server/api/agent-gateway.ts) on a plain Node HTTP server
 * (keep-alive, `x-lablink-peer` from the socket), with the real agent-token auth. Next itself is
 * not started: agents' calls never reach it.
 *
 * BENCH_VIA=fetch serves them instead through the tRPC fetch handler (`handleTrpc`, the one
 * app/api/trpc/[trpc]/route.ts runs, which agents went through before the gateway), still without
 * Next's own routing: the baseline for the gateway.
 *
 * Environment: DATABASE_URL, BENCH_POOL (postgres.js pool size, default 10 like the app),
 * LABLINK_HEARTBEAT_INTERVAL_S, LABLINK_HEARTBEAT_FLUSH_MS, LABLINK_GPU_SAMPLE_INTERVAL_S
 * (read through server/env.ts like the app). Tells its parent its port over IPC.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { type GatewayContext, serveAgentCall } from "../server/api/agent-gateway";
import { handleTrpc } from "../server/api/handler";
import { createDatabase } from "../server/db/client";
import { agentSettingsFrom } from "../server/domain/agents";
import { flushHeartbeatBuffers } from "../server/domain/heartbeat-buffer";
import { env } from "../server/env";

const url = process.env.DATABASE_URL;
if (!url) throw new Error("DATABASE_URL is required");
const database = createDatabase(url, { max: Number(process.env.BENCH_POOL ?? 10) });
const settings = agentSettingsFrom(env());

const viaFetch = process.env.BENCH_VIA === "fetch";

const makeContext = (): GatewayContext => ({
  db: database.db,
  events: null,
  settings,
  getSession: async () => null,
});

const server = http.createServer(async (req, res) => {
  req.headers["x-lablink-peer"] = req.socket.remoteAddress ?? "";
  if (!viaFetch) {
    if (serveAgentCall(req, res, makeContext)) return;
    res.writeHead(404).end();
    return;
  }
  try {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
    const hasBody = req.method !== "GET" && req.method !== "HEAD";
    const request = new Request(`http://${req.headers.host ?? "localhost"}${req.url}`, {
      method: req.method,
      headers,
      body: hasBody ? Buffer.concat(chunks) : undefined,
    });
    const response = await handleTrpc(request, makeContext);
    const body = Buffer.from(await response.arrayBuffer());
    res.writeHead(response.status, {
      ...Object.fromEntries(response.headers),
      "content-length": body.length,
    });
    res.end(body);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) res.statusCode = 500;
    res.end();
  }
});
server.keepAliveTimeout = 65_000;
server.listen(0, "127.0.0.1", () => {
  process.send?.({ type: "ready", port: (server.address() as AddressInfo).port });
});

const stop = () => {
  server.closeAllConnections();
  server.close(() => {
    void flushHeartbeatBuffers()
      .then(() => database.sql.end({ timeout: 2 }))
      .finally(() => process.exit(0));
  });
  setTimeout(() => process.exit(0), 3_000).unref();
};
process.on("SIGTERM", stop);
process.on("disconnect", stop);
