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

import cluster from "node:cluster";
import { mkdirSync, writeFileSync } from "node:fs";
import http from "node:http";
import { Session } from "node:inspector";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { type GatewayContext, serveAgentCall } from "../server/api/agent-gateway";
import { credentialLookupStats } from "../server/auth/agent-tokens";
import { createDatabase } from "../server/db/client";
import { agentSettingsFrom } from "../server/domain/agents";
import { flushHeartbeatBuffers } from "../server/domain/heartbeat-buffer";
import { env } from "../server/env";
import { answerWithFetchHandler } from "../tests/http";

// BENCH_WORKERS=N: N server processes sharing the port (node:cluster), as LABLINK_WEB_PROCESSES
// runs the web server; the primary only hands out connections and reports the workers' pids.
const workers = Number(process.env.BENCH_WORKERS ?? 1);
if (workers > 1 && cluster.isPrimary) {
  const pids: number[] = [];
  let port = 0;
  for (let i = 0; i < workers; i++) {
    const w = cluster.fork();
    w.on("message", (m: { type?: string; port?: number }) => {
      if (m.type === "stats") process.send?.(m);
      if (m.type !== "ready") return;
      pids.push(w.process.pid as number);
      port = m.port ?? port;
      if (pids.length === workers) process.send?.({ type: "ready", port, pids });
    });
  }
  process.on("message", (m) => {
    for (const w of Object.values(cluster.workers ?? {})) w?.send(m as object);
  });
  const stopAll = () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGTERM");
    setTimeout(() => process.exit(0), 3_500).unref();
    cluster.on("exit", () => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    });
  };
  process.on("SIGTERM", stopAll);
  process.on("disconnect", stopAll);
} else {
  startServer();
}

function startServer() {
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
      await answerWithFetchHandler(req, res, makeContext());
    } catch (err) {
      console.error(err);
      if (!res.headersSent) res.statusCode = 500;
      res.end();
    }
  });
  server.keepAliveTimeout = 65_000;
  // Workers of a cluster share the primary's port: BENCH_PORT (set by the parent) or any.
  server.listen(Number(process.env.BENCH_PORT ?? 0), "127.0.0.1", () => {
    const port = (server.address() as AddressInfo).port;
    process.send?.({ type: "ready", port, pids: [process.pid] });
  });

  // BENCH_SERVER_PROFILE=dir: the parent brackets the steady run with profile-start/-stop, so the
  // profile shows heartbeats only (not the registrations before them).
  const profileDir = process.env.BENCH_SERVER_PROFILE;
  const profiler = profileDir ? new Session() : null;
  profiler?.connect();
  process.on("message", (m: { type?: string }) => {
    // Token lookups and the statements they took (batched per event-loop turn).
    if (m.type === "stats")
      process.send?.({ type: "stats", ...credentialLookupStats(database.db) });
    if (!profiler || !profileDir) return;
    if (m.type === "profile-start") {
      profiler.post("Profiler.enable", () => profiler.post("Profiler.start"));
    } else if (m.type === "profile-stop") {
      profiler.post("Profiler.stop", (err, result) => {
        if (err) return console.error(err);
        mkdirSync(profileDir, { recursive: true });
        const file = path.join(profileDir, `heartbeat-server-${Date.now()}.cpuprofile`);
        writeFileSync(file, JSON.stringify(result.profile));
        console.error(`server CPU profile: ${file}`);
      });
    }
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
}
