import type { IncomingMessage, ServerResponse } from "node:http";
import { z } from "zod";
import { bearerToken, verifyAgentToken } from "../auth/agent-tokens";
import type { Vm } from "../db/schema";
import { isDomainError } from "../domain/errors";
import {
  type ClientMetrics,
  clientHeartbeat,
  clientStatusOf,
  recordClientLogs,
  recordClientTimings,
  reportClientStatus,
  reportGpuHealth,
  reportInUse,
  startupCommand,
  startupDelivered,
} from "../domain/legacy-client";
import type { Actor } from "../domain/vm-state";
import { logger } from "../log";
import { apiSecurityHeaders } from "../security-headers";
import type { GatewayContext } from "./agent-gateway";

/**
 * The original LabLink client API (docs/original-api.md), served before Next like the agent
 * gateway, so that VMs built from an original LabLink client image work against this server
 * unchanged. Each VM's `API_TOKEN` is its own LabLink agent token, and it may act only for the VM
 * it belongs to: the name in `hostname`, `vm_id`, `log_stream` or the path must be that VM's.
 * Bodies and status codes are the original's; every body is validated, and a caller's mistake is
 * answered 4xx, never 500.
 */

/** Every body but a log batch: the original client's are a few hundred bytes. */
export const MAX_BODY_BYTES = 256 * 1024;
export const MAX_LOG_BODY_BYTES = 1024 * 1024;
/** How long a waiting /vm_startup sleeps between looks when no push comes (pushes wake it). */
const STARTUP_RECHECK_MS = 60_000;

const HTTP_HEADERS = apiSecurityHeaders(false);
const HTTPS_HEADERS = apiSecurityHeaders(true);

type Answer = { status: number; body: unknown };
type Call = {
  vm: Vm;
  actor: Actor;
  body: unknown;
  /** The host name in the path, for the routes that carry one. */
  pathHost: string | null;
  ctx: GatewayContext;
  signal: AbortSignal;
  res: ServerResponse;
};

const hostname = z.string().trim().min(1).max(255);
const SUCCESS = { status: "success" } as const;

const error = (status: number, message: string): Answer => ({ status, body: { error: message } });
const FORBIDDEN = error(403, "This API token belongs to a different VM.");

/**
 * Parses a body with `schema`; a malformed or incomplete one is the original's 400 with `message`.
 * Objects are not strict: the original ignored fields it did not know, and so do we.
 */
function parse<T>(
  schema: z.ZodType<T>,
  body: unknown,
  message: string,
): { data: T; refused?: never } | { refused: Answer } {
  const parsed = schema.safeParse(body);
  return parsed.success ? { data: parsed.data } : { refused: error(400, message) };
}

type Route = {
  name: string;
  method: "GET" | "POST";
  maxBody: number;
  handle: (call: Call) => Promise<Answer>;
};

const startupBody = z.object({ hostname });
const gpuHealthBody = z.object({ hostname, gpu_status: z.enum(["Healthy", "Unhealthy", "N/A"]) });
const inUseBody = z.object({ hostname, status: z.boolean() });
const heartbeatBody = z.object({ vm_id: hostname });
const statusBody = z.object({ hostname, status: z.string().trim().min(1).max(64) });
const logsBody = z.object({
  log_group: z.string().min(1).max(512),
  log_stream: hostname,
  messages: z.array(z.string().max(256 * 1024)).max(10_000),
});
const epoch = z.number().min(0).max(1e11).nullable().optional();
const seconds = z.number().min(0).max(1e8).nullable().optional();
const metricsBody = z
  .object({
    cloud_init_start: epoch,
    cloud_init_end: epoch,
    cloud_init_duration_seconds: seconds,
    container_start: epoch,
    container_end: epoch,
    container_startup_duration_seconds: seconds,
  })
  .refine((m) => Object.values(m).some((v) => v !== undefined && v !== null), {
    message: "no timings",
  });

const mine = (call: Call, name: string) => call.vm.name === name;

const ROUTES: Record<string, Route> = {
  "POST /vm_startup": {
    name: "vm_startup",
    method: "POST",
    maxBody: MAX_BODY_BYTES,
    handle: async (call) => {
      const p = parse(startupBody, call.body, "Hostname is required.");
      if (p.refused) return p.refused;
      const b = p.data;
      if (!mine(call, b.hostname)) return FORBIDDEN;
      return waitForStartup(call);
    },
  },
  "POST /api/gpu_health": {
    name: "gpu_health",
    method: "POST",
    maxBody: MAX_BODY_BYTES,
    handle: async (call) => {
      const p = parse(
        gpuHealthBody,
        call.body,
        'Hostname and gpu_status ("Healthy", "Unhealthy" or "N/A") are required.',
      );
      if (p.refused) return p.refused;
      const b = p.data;
      if (!mine(call, b.hostname)) return FORBIDDEN;
      await reportGpuHealth(call.ctx.db, {
        vm: call.vm,
        gpuStatus: b.gpu_status,
        actor: call.actor,
      });
      return { status: 200, body: SUCCESS };
    },
  },
  "POST /api/update_inuse_status": {
    name: "update_inuse_status",
    method: "POST",
    maxBody: MAX_BODY_BYTES,
    handle: async (call) => {
      const p = parse(inUseBody, call.body, "Hostname and status (true or false) are required.");
      if (p.refused) return p.refused;
      const b = p.data;
      if (!mine(call, b.hostname)) return FORBIDDEN;
      await reportInUse(call.ctx.db, { vm: call.vm, inUse: b.status });
      return { status: 200, body: SUCCESS };
    },
  },
  "POST /api/heartbeat": {
    name: "heartbeat",
    method: "POST",
    maxBody: MAX_BODY_BYTES,
    handle: async (call) => {
      const p = parse(heartbeatBody, call.body, "vm_id is required.");
      if (p.refused) return p.refused;
      const b = p.data;
      if (!mine(call, b.vm_id)) return FORBIDDEN;
      await clientHeartbeat(call.ctx.db, {
        vm: call.vm,
        settings: call.ctx.settings,
        actor: call.actor,
      });
      return { status: 200, body: SUCCESS };
    },
  },
  "POST /api/vm-status": {
    name: "vm-status",
    method: "POST",
    maxBody: MAX_BODY_BYTES,
    handle: async (call) => {
      const p = parse(statusBody, call.body, "Hostname and status are required.");
      if (p.refused) return p.refused;
      const b = p.data;
      if (!mine(call, b.hostname)) return FORBIDDEN;
      await reportClientStatus(call.ctx.db, { vm: call.vm, status: b.status, actor: call.actor });
      return { status: 200, body: SUCCESS };
    },
  },
  "GET /api/vm-status/": {
    name: "vm-status (get)",
    method: "GET",
    maxBody: 0,
    handle: async (call) => {
      if (call.pathHost === null || !mine(call, call.pathHost)) return FORBIDDEN;
      return { status: 200, body: { hostname: call.vm.name, status: clientStatusOf(call.vm) } };
    },
  },
  "POST /api/vm-logs": {
    name: "vm-logs",
    method: "POST",
    maxBody: MAX_LOG_BODY_BYTES,
    handle: async (call) => {
      const p = parse(
        logsBody,
        call.body,
        "log_group, log_stream and messages (a list of strings) are required.",
      );
      if (p.refused) return p.refused;
      const b = p.data;
      if (!mine(call, b.log_stream)) return FORBIDDEN;
      await recordClientLogs(call.ctx.db, {
        vm: call.vm,
        logGroup: b.log_group,
        messages: b.messages,
      });
      return { status: 200, body: SUCCESS };
    },
  },
  "POST /api/vm-metrics/": {
    name: "vm-metrics",
    method: "POST",
    maxBody: MAX_BODY_BYTES,
    handle: async (call) => {
      if (call.pathHost === null || !mine(call, call.pathHost)) return FORBIDDEN;
      const p = parse(
        metricsBody,
        call.body,
        "Metrics are required: cloud_init_start, cloud_init_end, container_start, container_end (epoch seconds) or the durations.",
      );
      if (p.refused) return p.refused;
      const b = p.data;
      await recordClientTimings(call.ctx.db, { vm: call.vm, metrics: b as ClientMetrics });
      return { status: 200, body: SUCCESS };
    },
  },
};

/**
 * Holds the request until the VM's holder has handed a Chrome Remote Desktop command over (at
 * once when one is waiting). It waits on the process's one LISTEN connection (server/events.ts):
 * a waiting VM holds no database connection, however long it waits.
 */
async function waitForStartup(call: Call): Promise<Answer> {
  const { db, events } = call.ctx;
  await events?.listen();
  for (;;) {
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    call.signal.addEventListener("abort", onAbort, { once: true });
    // Registered before the read: a hand-off committed in between still wakes us.
    const change = events
      ? events.waitForChange(call.vm.id, STARTUP_RECHECK_MS, stop.signal)
      : new Promise<false>((r) => setTimeout(() => r(false), 1_000));
    try {
      const found = await startupCommand(db, call.vm.id);
      if (found) {
        if (call.signal.aborted || call.res.destroyed) return error(499, "client went away");
        try {
          await startupDelivered(db, {
            vm: found.vm,
            requestId: found.requestId,
            actor: call.actor,
          });
        } catch (e) {
          // Superseded by a newer request meanwhile: look again.
          if (isDomainError(e) && e.code === "STATE_CONFLICT") continue;
          throw e;
        }
        return {
          status: 200,
          body: { status: "success", pin: found.pin, command: found.command },
        };
      }
      await change;
      if (call.signal.aborted) return error(499, "client went away");
    } finally {
      stop.abort();
      call.signal.removeEventListener("abort", onAbort);
    }
  }
}

function route(
  method: string | undefined,
  url: string | undefined,
): { route: Route; pathHost: string | null } | null {
  if (!url || (method !== "GET" && method !== "POST")) return null;
  const q = url.indexOf("?");
  const path = q < 0 ? url : url.slice(0, q);
  const exact = ROUTES[`${method} ${path}`];
  if (exact && !path.endsWith("/")) return { route: exact, pathHost: null };
  for (const prefix of ["/api/vm-status/", "/api/vm-metrics/"]) {
    const r = ROUTES[`${method} ${prefix}`];
    if (!r || !path.startsWith(prefix)) continue;
    const segment = path.slice(prefix.length);
    if (segment === "" || segment.includes("/")) return null;
    let host: string | null = null;
    try {
      host = decodeURIComponent(segment);
    } catch {
      host = null; // malformed escapes: no VM has that name
    }
    return { route: r, pathHost: host };
  }
  return null;
}

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        req.removeAllListeners("data");
        req.resume();
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

/**
 * Serves the request when it is a call of the original client API and returns true; returns
 * false, having touched nothing, for every other request (Next serves it). `req.headers` must be
 * prepared as for the agent gateway (server/web.ts).
 */
export function serveOriginalApi(
  req: IncomingMessage,
  res: ServerResponse,
  makeContext: () => GatewayContext,
): boolean {
  const found = route(req.method, req.url);
  if (!found) return false;
  const started = performance.now();
  void answer(found.route, found.pathHost, req, res, makeContext)
    .catch((err: unknown) => {
      logger.error({ err, route: found.route.name }, "original API call failed");
      return error(500, "Internal server error.");
    })
    .then((a) => {
      const ms = Math.round(performance.now() - started);
      const fields = { route: found.route.name, status: a.status, ms };
      if (a.status === 401 || a.status === 403) logger.info(fields, "access refused");
      else logger.debug(fields, "original API call");
      if (res.destroyed || res.headersSent) return;
      const json = JSON.stringify(a.body);
      res.writeHead(a.status, {
        ...(req.headers["x-forwarded-proto"] === "https" ? HTTPS_HEADERS : HTTP_HEADERS),
        "content-type": "application/json",
        "content-length": Buffer.byteLength(json),
      });
      res.end(json);
    });
  return true;
}

async function answer(
  r: Route,
  pathHost: string | null,
  req: IncomingMessage,
  res: ServerResponse,
  makeContext: () => GatewayContext,
): Promise<Answer> {
  const token = bearerToken(req.headers.authorization);
  if (!token) return error(401, "Missing or invalid Authorization header.");
  const ctx = makeContext();
  const verified = await verifyAgentToken(ctx.db, token);
  if (!verified) return error(401, "Invalid API token.");
  let body: unknown;
  if (r.method === "POST") {
    let text: string;
    try {
      text = await readBody(req, r.maxBody);
    } catch (e) {
      if (e instanceof BodyTooLarge) return error(413, "Request body too large.");
      throw e;
    }
    try {
      body = text === "" ? undefined : JSON.parse(text);
    } catch {
      body = undefined; // answered as a missing field, as the original did
    }
  }
  const abort = new AbortController();
  res.once("close", () => {
    if (!res.writableFinished) abort.abort();
  });
  const ip =
    (req.headers["x-lablink-client-ip"] as string | undefined) ||
    (req.headers["x-lablink-peer"] as string | undefined) ||
    null;
  const actor: Actor = { kind: "agent", id: verified.vmId, ip };
  try {
    return await r.handle({
      vm: verified.vm,
      actor,
      body,
      pathHost,
      ctx,
      signal: abort.signal,
      res,
    });
  } catch (e) {
    if (isDomainError(e)) {
      if (e.code === "NOT_FOUND") return error(404, "VM not found.");
      if (e.code === "STATE_CONFLICT" || e.code === "ILLEGAL_TRANSITION")
        return error(409, e.message);
    }
    throw e;
  }
}
