import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { decode } from "next-auth/jwt";
import { type RawData, WebSocket, WebSocketServer } from "ws";
import { bearerToken, verifyAgentToken } from "../auth/agent-tokens";
import type { DbOrTx } from "../db/client";
import {
  authorizeDesktop,
  closeDesktopSession,
  DESKTOP_PAIR_TIMEOUT_S,
  endedDesktopSessions,
  openDesktopSession,
  pairDesktopSession,
} from "../domain/desktop";
import { isDomainError } from "../domain/errors";
import type { VmEventHub } from "../events";
import { logger } from "../log";
import { AGENT_DESKTOP_PATH } from "../protocol/agent";

/**
 * The browser desktop relay: a viewer's WebSocket (`/api/desktop/<vmId>/ws`, noVNC's RFB) paired
 * with the VM agent's outbound WebSocket (`/api/agent/desktop/<relayId>`), bytes copied both ways.
 * The VM needs no inbound port. Pairing happens in this process's memory, so the viewer and the
 * agent must reach the same web process (one web process per deployment; docs/operations.md).
 *
 * Close codes the page understands: 4001 the VM was released (stop reconnecting), 4002 the VM's
 * side dropped, 4008 the VM did not answer in time (both: reconnect).
 */

const UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
const BROWSER_PATH = new RegExp(`^/api/desktop/(${UUID})/ws$`);
const AGENT_PATH = new RegExp(`^${AGENT_DESKTOP_PATH}(${UUID})$`);

export const CLOSE_RELEASED = 4001;
export const CLOSE_VM_DROPPED = 4002;
export const CLOSE_PAIR_TIMEOUT = 4008;

/** A direction stops reading once this much is queued towards a slow peer, resumes under half. */
const HIGH_WATER = 4 * 1024 * 1024;
/** The largest message either side may send (a full 4K framebuffer update is ~33 MB raw). */
const MAX_PAYLOAD = 64 * 1024 * 1024;
/** Re-check the holder even without a change notification (a missed one costs at most this). */
const RECHECK_MS = 15_000;
/** A still desktop sends nothing: pings keep proxies (idle timeouts of ~60 s) from cutting it. */
const PING_MS = 25_000;

const SESSION_COOKIES = ["__Secure-authjs.session-token", "authjs.session-token"];

export type DesktopRelayOptions = {
  db: DbOrTx;
  events: VmEventHub;
  /** Auth.js's secret; without one no browser session can be read, so every viewer is refused. */
  authSecret: string | undefined;
  publicUrl?: string | undefined;
  pairTimeoutMs?: number;
};

type Relay = {
  id: string;
  vmId: string;
  assignmentId: string;
  browser: WebSocket;
  agent: WebSocket | null;
  timer: NodeJS.Timeout | null;
  /** Browser messages that arrived before the agent did. */
  early: RawData[];
  closed: boolean;
};

function cookieValue(header: string | undefined, name: string): string | null {
  if (!header) return null;
  const parts = new Map<string, string>();
  for (const pair of header.split(";")) {
    const eq = pair.indexOf("=");
    if (eq < 0) continue;
    parts.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
  }
  const whole = parts.get(name);
  if (whole) return decodeURIComponent(whole);
  // Auth.js splits a large cookie into name.0, name.1, …
  let joined = "";
  for (let i = 0; parts.has(`${name}.${i}`); i++) joined += parts.get(`${name}.${i}`);
  return joined ? decodeURIComponent(joined) : null;
}

/** The signed-in user's id from the Auth.js session cookie (a JWT), or null. */
export async function sessionUserId(
  cookieHeader: string | undefined,
  secret: string | undefined,
): Promise<string | null> {
  if (!secret) return null;
  for (const name of SESSION_COOKIES) {
    const token = cookieValue(cookieHeader, name);
    if (!token) continue;
    try {
      const payload = await decode({ token, secret, salt: name });
      if (payload?.sub && (!payload.exp || payload.exp * 1000 > Date.now())) return payload.sub;
    } catch {
      // A cookie that does not decode under this secret is no session.
    }
  }
  return null;
}

/**
 * Cross-site WebSocket hijacking: browsers send cookies on a WebSocket to any site, so an
 * upgrade must come from a page of this server (the public URL, or the Host the browser used).
 */
export function originAllowed(
  origin: string | undefined,
  host: string | undefined,
  publicUrl: string | undefined,
): boolean {
  if (!origin) return false;
  let o: URL;
  try {
    o = new URL(origin);
  } catch {
    return false;
  }
  if (publicUrl && o.origin === new URL(publicUrl).origin) return true;
  return !!host && (o.protocol === "http:" || o.protocol === "https:") && o.host === host;
}

function refuse(socket: Duplex, status: number, text: string, message: string) {
  const body = `${message}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\n\r\n${body}`,
  );
}

const STATUS: Record<string, [number, string]> = {
  NOT_FOUND: [404, "Not Found"],
  STATE_CONFLICT: [409, "Conflict"],
  NOT_SUPPORTED: [412, "Precondition Failed"],
};

/**
 * Copies messages from one socket to the other, pausing the reader while the writer has more
 * than HIGH_WATER queued (a slow browser must not make the server buffer a fast VM's frames).
 */
function pipe(from: WebSocket, to: WebSocket) {
  let queued = 0;
  let paused = false;
  from.on("message", (data: RawData) => {
    if (to.readyState !== WebSocket.OPEN) return;
    const size = Array.isArray(data)
      ? data.reduce((n, b) => n + b.length, 0)
      : (data as Buffer).byteLength;
    queued += size;
    to.send(data, { binary: true }, () => {
      queued -= size;
      if (paused && queued < HIGH_WATER / 2) {
        paused = false;
        from.resume();
      }
    });
    if (!paused && queued > HIGH_WATER) {
      paused = true;
      from.pause();
    }
  });
}

export class DesktopRelay {
  private readonly wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_PAYLOAD,
    perMessageDeflate: false,
  });
  private readonly relays = new Map<string, Relay>();
  private readonly watching = new Set<string>();
  private readonly pairTimeoutMs: number;
  /** Counters (tests, benchmarks, metrics). */
  readonly stats = { opened: 0, paired: 0, closed: 0 };

  private readonly pinger: NodeJS.Timeout;

  constructor(private readonly o: DesktopRelayOptions) {
    this.pairTimeoutMs = o.pairTimeoutMs ?? DESKTOP_PAIR_TIMEOUT_S * 1000;
    this.pinger = setInterval(() => {
      for (const r of this.relays.values()) {
        for (const ws of [r.browser, r.agent]) {
          if (ws?.readyState === WebSocket.OPEN) ws.ping();
        }
      }
    }, PING_MS);
    this.pinger.unref();
  }

  /** Relays open now (waiting or paired). */
  get open(): number {
    return this.relays.size;
  }

  /** Takes a desktop upgrade (browser or agent) and returns true; false for any other path. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const path = (req.url ?? "").split("?")[0] ?? "";
    const vmId = BROWSER_PATH.exec(path)?.[1];
    const relayId = vmId ? undefined : AGENT_PATH.exec(path)?.[1];
    if (!vmId && !relayId) return false;
    socket.on("error", () => socket.destroy());
    const work = vmId
      ? this.browserUpgrade(req, socket, head, vmId.toLowerCase())
      : this.agentUpgrade(req, socket, head, (relayId ?? "").toLowerCase());
    work.catch((err: unknown) => {
      logger.error({ err, path }, "desktop upgrade failed");
      if (socket.writable) refuse(socket, 500, "Internal Server Error", "desktop relay failed");
    });
    return true;
  }

  private async browserUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, vmId: string) {
    if (!originAllowed(req.headers.origin, req.headers.host, this.o.publicUrl)) {
      logger.warn({ origin: req.headers.origin?.slice(0, 200) }, "desktop upgrade: bad origin");
      refuse(socket, 403, "Forbidden", "cross-site desktop connection refused");
      return;
    }
    const userId = await sessionUserId(req.headers.cookie, this.o.authSecret);
    if (!userId) {
      refuse(socket, 401, "Unauthorized", "sign in to open a desktop");
      return;
    }
    let grant: Awaited<ReturnType<typeof authorizeDesktop>>;
    try {
      grant = await authorizeDesktop(this.o.db, { vmId, userId });
    } catch (err) {
      if (!isDomainError(err)) throw err;
      const [status, text] = STATUS[err.code] ?? [403, "Forbidden"];
      refuse(socket, status, text, err.message);
      return;
    }
    const peer = req.headers["x-lablink-client-ip"] ?? req.headers["x-lablink-peer"];
    const ip = typeof peer === "string" ? peer : null;
    const session = await openDesktopSession(this.o.db, {
      grant,
      viewerId: userId,
      actor: { kind: "user", id: userId, ip },
    });
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.stats.opened++;
      const relay: Relay = {
        id: session.id,
        vmId: grant.vm.id,
        assignmentId: grant.assignmentId,
        browser: ws,
        agent: null,
        timer: null,
        early: [],
        closed: false,
      };
      this.relays.set(relay.id, relay);
      relay.timer = setTimeout(
        () => this.close(relay, CLOSE_PAIR_TIMEOUT, "the VM did not answer"),
        this.pairTimeoutMs,
      );
      ws.on("message", (data) => {
        if (!relay.agent && relay.early.length < 64) relay.early.push(data);
      });
      ws.on("close", () => this.close(relay, 1000, "viewer left"));
      ws.on("error", () => this.close(relay, 1011, "viewer socket error"));
      this.watch(relay.vmId);
      logger.info(
        { vmId: relay.vmId, relayId: relay.id, admin: grant.admin },
        "desktop viewer waiting for the VM",
      );
    });
  }

  private async agentUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, relayId: string) {
    const token = bearerToken(req.headers.authorization);
    const identity = token ? await verifyAgentToken(this.o.db, token) : null;
    if (!identity) {
      refuse(socket, 401, "Unauthorized", "invalid agent token");
      return;
    }
    // The relay row is committed (and the agent told) just before the viewer's socket is
    // registered here: a fast agent may arrive first, so it waits a moment for it.
    let found = this.relays.get(relayId);
    for (let i = 0; !found && i < 40; i++) {
      await new Promise((r) => setTimeout(r, 25));
      found = this.relays.get(relayId);
    }
    const relay = found;
    if (!relay || relay.closed || relay.agent || relay.vmId !== identity.vmId) {
      refuse(socket, 404, "Not Found", "no such desktop relay waiting");
      return;
    }
    const paired = await pairDesktopSession(this.o.db, { relayId, vmId: identity.vmId });
    if (!paired || relay.closed) {
      refuse(socket, 404, "Not Found", "no such desktop relay waiting");
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      if (relay.closed) {
        ws.close(1000, "viewer left");
        return;
      }
      this.stats.paired++;
      relay.agent = ws;
      if (relay.timer) clearTimeout(relay.timer);
      relay.timer = null;
      relay.browser.removeAllListeners("message");
      pipe(relay.browser, ws);
      pipe(ws, relay.browser);
      for (const data of relay.early.splice(0)) ws.send(data, { binary: true });
      ws.on("close", () => void this.agentGone(relay, "the VM's side closed"));
      ws.on("error", () => void this.agentGone(relay, "the VM's side failed"));
      logger.info({ vmId: relay.vmId, relayId }, "desktop relay paired");
    });
  }

  /**
   * The agent's socket ended. A release reaches the agent (which stops the desktop) as fast as
   * it reaches this process, so ask the database which it was: a release tells the page to stop
   * reconnecting, anything else to try again.
   */
  private async agentGone(relay: Relay, reason: string) {
    if (relay.closed) return;
    const ended = await endedDesktopSessions(this.o.db, [
      { relayId: relay.id, vmId: relay.vmId, assignmentId: relay.assignmentId },
    ]).catch(() => []);
    if (ended.length > 0) this.close(relay, CLOSE_RELEASED, "VM released");
    else this.close(relay, CLOSE_VM_DROPPED, reason);
  }

  private close(relay: Relay, code: number, reason: string) {
    if (relay.closed) return;
    relay.closed = true;
    this.stats.closed++;
    this.relays.delete(relay.id);
    if (relay.timer) clearTimeout(relay.timer);
    for (const ws of [relay.browser, relay.agent]) {
      if (!ws) continue;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) {
        ws.close(code, reason);
        // A peer that does not answer the close handshake is cut off.
        setTimeout(() => ws.terminate(), 2_000).unref();
      }
    }
    void closeDesktopSession(this.o.db, { relayId: relay.id, reason }).catch((err: unknown) =>
      logger.warn({ err, relayId: relay.id }, "could not record a desktop relay's end"),
    );
    logger.info({ vmId: relay.vmId, relayId: relay.id, code, reason }, "desktop relay closed");
  }

  /**
   * While a VM has relays here, waits on its change notifications (release, reassignment,
   * termination) and closes every relay whose assignment ended, at once.
   */
  private watch(vmId: string) {
    if (this.watching.has(vmId)) return;
    this.watching.add(vmId);
    void (async () => {
      try {
        while (this.relaysOf(vmId).length > 0) {
          await this.o.events.waitForChange(vmId, RECHECK_MS);
          await this.recheck(vmId);
        }
      } catch (err) {
        logger.error({ err, vmId }, "desktop relay watch failed");
      } finally {
        this.watching.delete(vmId);
        // A relay opened just as the loop ended gets a new watcher.
        if (this.relaysOf(vmId).length > 0) this.watch(vmId);
      }
    })();
  }

  private relaysOf(vmId: string): Relay[] {
    return [...this.relays.values()].filter((r) => r.vmId === vmId);
  }

  /** Closes the VM's relays whose assignment is over; returns how many. */
  async recheck(vmId: string): Promise<number> {
    const mine = this.relaysOf(vmId);
    const ended = new Set(
      await endedDesktopSessions(
        this.o.db,
        mine.map((r) => ({ relayId: r.id, vmId: r.vmId, assignmentId: r.assignmentId })),
      ),
    );
    for (const r of mine) if (ended.has(r.id)) this.close(r, CLOSE_RELEASED, "VM released");
    return ended.size;
  }

  /** Closes every relay (shutdown). */
  closeAll(reason = "server stopping") {
    clearInterval(this.pinger);
    for (const r of [...this.relays.values()]) this.close(r, 1001, reason);
  }
}
