/**
 * The server side of bench/heartbeat.ts, run as its own process so that its CPU and memory are
 * measured apart from the simulated agents: the real tRPC fetch handler (`handleTrpc`, the one
 * app/api/trpc/[trpc]/route.ts serves) with the real agent-token auth, on a plain Node HTTP server
 * the way server/web.ts hosts Next (keep-alive, `x-lablink-peer` from the socket). Only Next's own
 * routing is left out; agents carry no session cookie, so Auth.js is not consulted for them either.
 *
 * Environment: DATABASE_URL, BENCH_POOL (postgres.js pool size, default 10 like the app),
 * LABLINK_HEARTBEAT_INTERVAL_S, LABLINK_HEARTBEAT_FLUSH_MS, LABLINK_GPU_SAMPLE_INTERVAL_S
 * (read through server/env.ts like the app). Tells its parent its port over IPC.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { handleTrpc } from "../server/api/handler";
import { createDatabase } from "../server/db/client";
import { agentSettingsFrom } from "../server/domain/agents";
import { flushHeartbeatBuffers } from "../server/domain/heartbeat-buffer";
import { env } from "../server/env";

const url = process.env.DATABASE_URL;
if (!url) throw new Error("DATABASE_URL is required");
const database = createDatabase(url, { max: Number(process.env.BENCH_POOL ?? 10) });
const settings = agentSettingsFrom(env());

const makeContext = () => ({
  db: database.db,
  events: null,
  settings,
  getSession: async () => null,
});

const server = http.createServer(async (req, res) => {
  try {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
    headers.set("x-lablink-peer", req.socket.remoteAddress ?? "");
    const hasBody = req.method !== "GET" && req.method !== "HEAD";
    const request = new Request(`http://${req.headers.host ?? "localhost"}${req.url}`, {
      method: req.method,
      headers,
      body: hasBody ? Buffer.concat(chunks) : undefined,
    });
    const response = await handleTrpc(request, makeContext);
    const body = Buffer.from(await response.arrayBuffer());
    res.writeHead(response.status, Object.fromEntries(response.headers));
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
