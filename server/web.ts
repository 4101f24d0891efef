import http from "node:http";
import path from "node:path";
import next from "next";
import { type GatewayContext, serveAgentCall } from "./api/agent-gateway";
import { DesktopRelay } from "./api/desktop-relay";
import { serveOriginalApi } from "./api/original-api";
import { serveWorkUpload } from "./api/work-export";
import { S3ArchiveSigner } from "./cloud/s3/archive-signer";
import { getDatabase } from "./db/client";
import { agentSettingsFrom } from "./domain/agents";
import { closeStaleDesktopSessions } from "./domain/desktop";
import { flushHeartbeatBuffers } from "./domain/heartbeat-buffer";
import { registerArchiveSigner } from "./domain/work-archive";
import { env, listenHost } from "./env";
import { getEventHub } from "./events";
import { prepareRequestHeaders } from "./http";
import { logger } from "./log";

/**
 * The web process: Next.js (UI, /api/trpc, /api/auth, /api/health) on a plain Node HTTP server,
 * so that it stops cleanly with its parent and closes held agent long-polls on shutdown. Agents'
 * calls are answered before Next sees them (server/api/agent-gateway.ts).
 */
async function main() {
  const e = env();
  const dev = process.argv.includes("--dev");
  const host = listenHost(e);
  const app = next({
    dev,
    dir: path.resolve(import.meta.dirname, ".."),
    hostname: host,
    port: e.PORT,
  });
  await app.prepare();
  const handle = app.getRequestHandler();
  // Work archives: wipe commands carry presigned S3 PUT URLs, the profile presigned GET links.
  registerArchiveSigner(
    new S3ArchiveSigner(e.LABLINK_S3_ENDPOINT ? { endpoint: e.LABLINK_S3_ENDPOINT } : {}),
  );
  // Agents' calls skip Next (server/api/agent-gateway.ts); they never carry a session.
  const settings = agentSettingsFrom(e);
  const agentContext = (): GatewayContext => ({
    db: getDatabase().db,
    events: getEventHub(),
    settings,
    getSession: async () => null,
  });
  const server = http.createServer((req, res) => {
    // Before anything reads it: forwarding headers only from a trusted proxy, the client IP (rate
    // limits, audit rows) decided here, once, and the public URL as the host (server/http.ts).
    prepareRequestHeaders(
      req.headers,
      req.socket.remoteAddress,
      e.LABLINK_TRUST_PROXY,
      e.LABLINK_PUBLIC_URL,
    );
    if (serveAgentCall(req, res, agentContext)) return;
    if (serveOriginalApi(req, res, agentContext)) return;
    // Work-folder chunks from agents meet the researcher's download in this process.
    if (serveWorkUpload(req, res, agentContext)) return;
    handle(req, res).catch((err) => {
      logger.error({ err, url: req.url }, "request failed");
      if (!res.headersSent) res.statusCode = 500;
      res.end();
    });
  });
  // Browser desktops: the viewer's and the VM agent's WebSockets, paired in this process
  // (server/api/desktop-relay.ts). Any other upgrade (Next's development reload) goes to Next.
  const stale = await closeStaleDesktopSessions(getDatabase().db);
  if (stale > 0) logger.info({ count: stale }, "closed desktop relays left by a previous run");
  const desktops = new DesktopRelay({
    db: getDatabase().db,
    events: getEventHub(),
    authSecret: e.AUTH_SECRET,
    publicUrl: e.LABLINK_PUBLIC_URL,
  });
  const nextUpgrade = app.getUpgradeHandler();
  server.on("upgrade", (req, socket, head) => {
    prepareRequestHeaders(
      req.headers,
      req.socket.remoteAddress,
      e.LABLINK_TRUST_PROXY,
      e.LABLINK_PUBLIC_URL,
    );
    if (desktops.handleUpgrade(req, socket, head)) return;
    nextUpgrade(req, socket, head).catch((err: unknown) => {
      logger.warn({ err, url: req.url }, "upgrade failed");
      socket.destroy();
    });
  });
  // Agent long-polls hold requests ~25 s; keep sockets alive a little longer than that.
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(e.PORT, host, resolve);
  });
  logger.info({ host, port: e.PORT, dev }, "web server listening");
  process.send?.({ type: "ready" });

  let stopping = false;
  const shutdown = (reason: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ reason }, "web server stopping");
    // Buffered heartbeats (GPU readings, heartbeat times) are written before the process ends.
    desktops.closeAll();
    server.close(() => {
      void flushHeartbeatBuffers().finally(() => process.exit(0));
    });
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 3_000).unref();
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  // A closed terminal sends SIGHUP to the whole process group; stop as on Ctrl-C.
  process.on("SIGHUP", () => shutdown("SIGHUP"));
  process.on("disconnect", () => shutdown("parent exited"));
}

main().catch((err) => {
  logger.fatal({ err }, "web server failed to start");
  process.exit(1);
});
