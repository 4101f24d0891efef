/**
 * The server side of bench/desktop.ts, in its own process so its CPU is measured apart from the
 * simulated viewers and agents: a plain Node HTTP server whose upgrades go to the real desktop
 * relay (server/api/desktop-relay.ts) with its real authorisation on real Postgres, as
 * server/web.ts wires it. Next is not started: desktop sockets never reach it.
 *
 * Environment: DATABASE_URL, AUTH_SECRET. Tells its parent its port over IPC.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { DesktopRelay } from "../server/api/desktop-relay";
import { createDatabase } from "../server/db/client";
import { VmEventHub } from "../server/events";
import { prepareRequestHeaders } from "../server/http";

const { db, sql } = createDatabase(process.env.DATABASE_URL ?? "", { max: 10 });
const events = new VmEventHub(sql);
const relay = new DesktopRelay({ db, events, authSecret: process.env.AUTH_SECRET });
const server = http.createServer((_req, res) => {
  res.statusCode = 404;
  res.end();
});
server.on("upgrade", (req, socket, head) => {
  prepareRequestHeaders(req.headers, req.socket.remoteAddress, { kind: "none" });
  if (!relay.handleUpgrade(req, socket, head)) socket.destroy();
});
server.listen(0, "127.0.0.1", () => {
  process.send?.({ type: "ready", port: (server.address() as AddressInfo).port });
});
const stop = () => {
  relay.closeAll();
  server.closeAllConnections();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2_000).unref();
};
process.on("SIGTERM", stop);
process.on("disconnect", stop);
