import type { IncomingMessage, ServerResponse } from "node:http";
import { bearerToken, verifyAgentToken } from "../auth/agent-tokens";
import type { Db } from "../db/client";
import { DomainError, domainErrorCodes } from "../domain/errors";
import type { Actor } from "../domain/vm-state";
import {
  beginWorkExport,
  finishWorkExport,
  requestWorkExport,
  workExportWanted,
} from "../domain/work-export";
import type { VmEventHub } from "../events";
import { logger } from "../log";
import { EXPORT_CHUNK_MAX_BYTES } from "../protocol/agent";

/**
 * Moves a researcher's work folder from the VM's agent to their browser, without storing it:
 *
 *   browser  GET  /api/vm/<vmId>/work   (session; the current holder only)
 *            → an export row + the agent's long poll is woken with an `export` command
 *   agent    POST /api/agent/export/<exportId>?seq=0&folderBytes=<n>  (its token; empty body)
 *            POST ...?seq=1, 2, ...   (tar.gz chunks of at most EXPORT_CHUNK_MAX_BYTES)
 *            POST ...?seq=N&done=1    (or &error=1 with the reason as the body)
 *
 * The two meet in this process's memory (the registry below): the agent's chunks must reach the
 * web process that holds the browser's request. One web process is assumed; behind a load
 * balancer with several, route /api/agent/export/ and /api/vm/ with the same stickiness as the
 * session, or run one web process (docs/operations.md). Each chunk is answered only once the
 * browser has taken it, so a slow download slows the agent's tar, and memory stays at about one
 * chunk per download. Chunked POSTs keep every request short (the server's 60 s request timeout).
 */

/** How long the browser waits for the agent's first chunk (folder size) before giving up. */
export const EXPORT_START_TIMEOUT_MS = 60_000;
/** How long the download waits for the agent's next chunk before it is cut. */
export const EXPORT_IDLE_TIMEOUT_MS = 120_000;
/** How often a chunk waiting for a slow browser re-checks that the hold is still current. */
const RECHECK_MS = 5_000;

type Failure = { status: number; message: string };

type Rendezvous = {
  exportId: string;
  vmId: string;
  limitBytes: number;
  nextSeq: number;
  bytes: number;
  ended: boolean;
  started: { resolve: (folderBytes: number) => void; reject: (f: Failure) => void };
  controller: ReadableStreamDefaultController<Uint8Array> | null;
  /** Resolved when the browser asks for more (or has gone away). */
  pulled: (() => void) | null;
  cancelled: boolean;
  idleTimer: NodeJS.Timeout | null;
};

const REGISTRY = Symbol.for("lablink.workExports");
/**
 * On globalThis: Next's bundle of the route handler and server/web.ts's own module graph are
 * separate copies of this file in one process; both must see the same map.
 */
function registry(): Map<string, Rendezvous> {
  const g = globalThis as unknown as Record<symbol, Map<string, Rendezvous> | undefined>;
  g[REGISTRY] ??= new Map();
  return g[REGISTRY];
}

/** Downloads waiting or streaming in this process (tests, metrics). */
export function workExportsInFlight(): number {
  return registry().size;
}

const STATUS_OF_CODE: Record<string, number> = {
  NOT_FOUND: 404,
  BAD_REQUEST: 400,
  CONFLICT: 409,
  PRECONDITION_FAILED: 412,
  FORBIDDEN: 403,
  UNAUTHORIZED: 401,
  TOO_MANY_REQUESTS: 429,
};

function failureOf(err: unknown): Failure {
  if (err instanceof DomainError) {
    return { status: STATUS_OF_CODE[domainErrorCodes[err.code]] ?? 400, message: err.message };
  }
  logger.error({ err }, "work export failed");
  return { status: 500, message: "The download could not be prepared; try again." };
}

const jsonError = (f: Failure) =>
  Response.json(
    { error: f.message },
    { status: f.status, headers: { "cache-control": "no-store" } },
  );

function end(rv: Rendezvous) {
  rv.ended = true;
  if (rv.idleTimer) clearTimeout(rv.idleTimer);
  rv.pulled?.();
  rv.pulled = null;
  if (registry().get(rv.exportId) === rv) registry().delete(rv.exportId);
}

function failStream(rv: Rendezvous, message: string) {
  if (rv.ended) return;
  rv.started.reject({ status: 502, message });
  try {
    rv.controller?.error(new Error(message));
  } catch {
    // already closed
  }
  end(rv);
}

/**
 * The browser's side: asks for the export, waits for the agent's first chunk, and answers with
 * the tar.gz as a stream (or a JSON error: over the limit, not the holder, VM not answering).
 */
export async function workDownloadResponse(
  deps: { db: Db },
  req: { userId: string; vmId: string; actor: Actor; signal?: AbortSignal; fileName?: string },
): Promise<Response> {
  let ticket: Awaited<ReturnType<typeof requestWorkExport>>;
  try {
    ticket = await requestWorkExport(deps.db, req);
  } catch (err) {
    return jsonError(failureOf(err));
  }
  let started!: Rendezvous["started"];
  const first = new Promise<number>((resolve, reject) => {
    started = { resolve, reject };
  });
  const rv: Rendezvous = {
    exportId: ticket.exportId,
    vmId: ticket.vmId,
    limitBytes: ticket.limitBytes,
    nextSeq: 0,
    bytes: 0,
    ended: false,
    started,
    controller: null,
    pulled: null,
    cancelled: false,
    idleTimer: null,
  };
  registry().set(rv.exportId, rv);
  const browserGone = async () => {
    if (rv.ended) return;
    rv.cancelled = true;
    end(rv);
    await finishWorkExport(deps.db, {
      exportId: rv.exportId,
      status: "cancelled",
      bytes: rv.bytes,
      error: "the download was stopped in the browser",
      actor: req.actor,
    }).catch((err) => logger.warn({ err }, "could not record a cancelled export"));
  };
  const timer = setTimeout(
    () =>
      rv.started.reject({ status: 504, message: "Your VM did not answer; try again in a minute." }),
    EXPORT_START_TIMEOUT_MS,
  );
  const onAbort = () =>
    rv.started.reject({ status: 499, message: "The download was stopped in the browser." });
  req.signal?.addEventListener("abort", onAbort, { once: true });
  let folderBytes: number;
  try {
    folderBytes = await first;
  } catch (f) {
    const failure = f as Failure;
    if (!rv.ended) {
      end(rv);
      await finishWorkExport(deps.db, {
        exportId: rv.exportId,
        status: failure.status === 499 ? "cancelled" : "failed",
        bytes: 0,
        error: failure.message,
        actor: req.actor,
      }).catch((err) => logger.warn({ err }, "could not record a failed export"));
    }
    return jsonError(failure);
  } finally {
    clearTimeout(timer);
    req.signal?.removeEventListener("abort", onAbort);
  }
  req.signal?.addEventListener("abort", () => void browserGone(), { once: true });
  const body = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        rv.controller = controller;
      },
      pull() {
        rv.pulled?.();
        rv.pulled = null;
      },
      cancel() {
        void browserGone();
      },
    },
    { highWaterMark: 1 },
  );
  const name = req.fileName ?? "work.tar.gz";
  return new Response(body, {
    headers: {
      "content-type": "application/gzip",
      "content-disposition": `attachment; filename="${name.replace(/[^A-Za-z0-9._-]/g, "_")}"`,
      "cache-control": "no-store",
      // The folder's size before compression: the portal's progress shows the share received.
      "x-lablink-work-bytes": String(folderBytes),
      "x-content-type-options": "nosniff",
    },
  });
}

const UPLOAD_PATH = /^\/api\/agent\/export\/([0-9a-f-]{36})(?:\?(.*))?$/i;

function answer(res: ServerResponse, status: number, body: Record<string, unknown>) {
  if (res.headersSent || res.destroyed) return;
  const json = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(json),
    "cache-control": "no-store",
  });
  res.end(json);
}

/** The body, at most `max` bytes (null past it; the rest is drained). */
function readChunk(req: IncomingMessage, max: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    if (Number(req.headers["content-length"] ?? 0) > max) {
      req.resume();
      resolve(null);
      return;
    }
    const parts: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > max) over = true;
      else parts.push(c);
    });
    req.on("end", () => resolve(over ? null : Buffer.concat(parts)));
    req.on("error", reject);
    // The agent went away mid-chunk (its wipe began, it stopped): nothing more comes.
    req.on("close", () => {
      if (!req.complete) reject(new Error("the agent closed the upload"));
    });
  });
}

/**
 * The agent's side, served by the plain Node server before Next (server/web.ts). Returns false
 * for any other path.
 */
export function serveWorkUpload(
  req: IncomingMessage,
  res: ServerResponse,
  deps: () => { db: Db; events?: VmEventHub | null },
): boolean {
  const m = UPLOAD_PATH.exec(req.url ?? "");
  if (!m) return false;
  void upload(
    req,
    res,
    deps(),
    (m[1] as string).toLowerCase(),
    new URLSearchParams(m[2] ?? ""),
  ).catch((err) => {
    logger.error({ err }, "work export upload failed");
    answer(res, 500, { error: "internal error" });
  });
  return true;
}

async function upload(
  req: IncomingMessage,
  res: ServerResponse,
  deps: { db: Db; events?: VmEventHub | null },
  exportId: string,
  query: URLSearchParams,
): Promise<void> {
  if (req.method !== "POST") {
    req.resume();
    return answer(res, 405, { error: "POST the export's chunks." });
  }
  const token = bearerToken(req.headers.authorization);
  const agent = token ? await verifyAgentToken(deps.db, token) : null;
  if (!agent) {
    req.resume();
    return answer(res, 401, { error: "Agent token is not valid." });
  }
  const actor: Actor = { kind: "agent", id: agent.vmId };
  const rv = registry().get(exportId);
  // Another VM's export looks exactly like an unknown one.
  if (!rv || rv.vmId !== agent.vmId || rv.ended) {
    req.resume();
    return answer(res, 404, { error: "No download is waiting for this export." });
  }
  const seq = Number(query.get("seq"));
  if (!Number.isInteger(seq) || seq !== rv.nextSeq) {
    req.resume();
    return answer(res, 409, { error: `Expected chunk ${rv.nextSeq}.` });
  }
  rv.nextSeq += 1;
  let chunk: Buffer | null;
  try {
    chunk = await readChunk(req, EXPORT_CHUNK_MAX_BYTES);
  } catch {
    const released = !(await workExportWanted(deps.db, exportId).catch(() => true));
    failStream(
      rv,
      released
        ? "The download stopped: your VM was released."
        : "Your VM stopped sending your files.",
    );
    await finish(
      deps.db,
      rv,
      released ? "cancelled" : "failed",
      released ? "the VM was released" : "the agent stopped sending",
      actor,
    );
    return;
  }
  if (chunk === null) {
    failStream(rv, "The VM sent a chunk larger than allowed.");
    await finish(deps.db, rv, "failed", "chunk too large", actor);
    return answer(res, 413, { error: `Chunks are at most ${EXPORT_CHUNK_MAX_BYTES} bytes.` });
  }
  if (query.get("error") === "1") {
    const message = chunk.toString("utf8").slice(0, 500) || "the VM could not read your folder";
    const text = `Your VM could not send your files: ${message}`;
    failStream(rv, text);
    await finish(deps.db, rv, "failed", text, actor);
    return answer(res, 200, { ok: true });
  }
  if (seq === 0) {
    const folderBytes = Number(query.get("folderBytes") ?? Number.NaN);
    if (!Number.isSafeInteger(folderBytes) || folderBytes < 0) {
      failStream(rv, "The VM did not say how large your folder is.");
      await finish(deps.db, rv, "failed", "no folder size", actor);
      return answer(res, 400, { error: "Send folderBytes with the first chunk." });
    }
    try {
      await beginWorkExport(deps.db, { exportId, vmId: agent.vmId, folderBytes });
    } catch (err) {
      const f = failureOf(err);
      // Over the limit: the browser gets the explanation, before any byte, as a 413.
      const status = f.status === 403 ? 413 : f.status;
      rv.started.reject({ status, message: f.message });
      end(rv);
      return answer(res, status, { error: f.message });
    }
    rv.started.resolve(folderBytes);
    void watchHold(deps, rv, actor);
  } else if (!(await workExportWanted(deps.db, exportId))) {
    failStream(rv, "The download stopped: your VM was released.");
    await finish(deps.db, rv, "cancelled", "the VM was released", actor);
    return answer(res, 410, { error: "This export is no longer wanted." });
  }
  if (rv.idleTimer) clearTimeout(rv.idleTimer);
  rv.idleTimer = setTimeout(() => {
    failStream(rv, "Your VM stopped sending your files.");
    void finish(deps.db, rv, "failed", "the agent stopped sending", actor);
  }, EXPORT_IDLE_TIMEOUT_MS);

  if (chunk.length > 0) {
    rv.bytes += chunk.length;
    // The folder was measured below the limit; compressed output past it means it grew since.
    if (rv.bytes > rv.limitBytes) {
      failStream(rv, "Your work folder grew past this fleet's download limit while it was sent.");
      await finish(deps.db, rv, "failed", "over the limit while streaming", actor);
      return answer(res, 413, { error: "Over the fleet's download limit." });
    }
    const taken = await deliver(rv, chunk);
    if (taken === "gone") {
      return answer(res, 410, { error: "The researcher stopped the download." });
    }
    if (taken === "released") {
      return answer(res, 410, { error: "This export is no longer wanted." });
    }
  }
  if (query.get("done") === "1") {
    // Recorded before the browser sees the end, so whatever it does next finds the export done.
    end(rv);
    await finish(deps.db, rv, "done", undefined, actor);
    try {
      rv.controller?.close();
    } catch {
      // the browser already went away
    }
  }
  return answer(res, 200, { ok: true });
}

/** Hands a chunk to the browser and waits until it has been taken, or the download ended. */
async function deliver(rv: Rendezvous, chunk: Buffer): Promise<"taken" | "gone" | "released"> {
  if (rv.ended || !rv.controller) return rv.cancelled ? "gone" : "released";
  rv.controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
  while ((rv.controller.desiredSize ?? 1) <= 0 && !rv.ended) {
    await new Promise<void>((resolve) => {
      rv.pulled = resolve;
    });
  }
  if (!rv.ended) return "taken";
  return rv.cancelled ? "gone" : "released";
}

/**
 * While a download streams, ends it as soon as its hold ends (a release by anyone, the hold or
 * idle limit, an admin), whether or not the agent is still sending: woken by the VM's change
 * notifications, and re-checking every RECHECK_MS in case one is missed.
 */
async function watchHold(
  deps: { db: Db; events?: VmEventHub | null },
  rv: Rendezvous,
  actor: Actor,
) {
  while (!rv.ended) {
    if (deps.events) await deps.events.waitForChange(rv.vmId, RECHECK_MS);
    else await new Promise((r) => setTimeout(r, RECHECK_MS));
    if (rv.ended) return;
    if (!(await workExportWanted(deps.db, rv.exportId).catch(() => true)) && !rv.ended) {
      failStream(rv, "The download stopped: your VM was released.");
      await finish(deps.db, rv, "cancelled", "the VM was released", actor);
    }
  }
}

async function finish(
  db: Db,
  rv: Rendezvous,
  status: "done" | "failed" | "cancelled",
  error: string | undefined,
  actor: Actor,
) {
  await finishWorkExport(db, {
    exportId: rv.exportId,
    status,
    bytes: rv.bytes,
    error,
    actor,
  }).catch((err) => logger.warn({ err }, "could not record the export's end"));
}
