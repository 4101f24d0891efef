import { spawn } from "node:child_process";
import { createReadStream, createWriteStream } from "node:fs";
import { lstat, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import type { AgentCommand } from "../../server/protocol/agent";
import type { Logger } from "./log";

export type ExportCommand = Extract<AgentCommand, { type: "export" }>;

/**
 * The researcher's work folder: the research account's home folder (everything they see as `~`),
 * read as that account's user where the agent runs as root.
 */
export type WorkFolder = { path: string; uid?: number; gid?: number };

export type ExportChunk = {
  exportId: string;
  seq: number;
  body: Buffer;
  /** Only with the first chunk: the folder's size before compression. */
  folderBytes?: number;
  done?: boolean;
  /** The body is the reason the agent could not send the folder. */
  error?: boolean;
};

/** POSTs one chunk to /api/agent/export/<exportId>; resolves with the HTTP status. */
export type ExportUploader = (chunk: ExportChunk, signal: AbortSignal) => Promise<number>;

/** Chunk size: small enough for smooth progress, large enough to keep requests few. */
export const EXPORT_CHUNK_BYTES = 1024 * 1024;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Bytes under `dir`, not following symbolic links (what tar reads). */
export async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const at = stack.pop() as string;
    let entries: string[];
    try {
      entries = await readdir(at);
    } catch {
      continue; // unreadable: tar skips it too (--ignore-failed-read)
    }
    for (const name of entries) {
      const p = join(at, name);
      const st = await lstat(p).catch(() => null);
      if (!st) continue;
      if (st.isDirectory()) stack.push(p);
      else if (st.isFile()) total += st.size;
    }
  }
  return total;
}

type Running = { assignmentId: string; abort: AbortController };

/**
 * Runs `export` commands: measures the work folder, sends its size (the server refuses a folder
 * over the fleet's limit before any byte), then streams `tar -czf -` of it in chunks. Each chunk
 * is answered once the browser took it, so tar runs at the download's pace. A wipe of the same
 * assignment, or the server answering 404/410/413, stops tar. No shell: tar gets its argv.
 */
export class WorkExporter {
  private readonly seen = new Set<string>();
  private readonly running = new Map<string, Running>();

  constructor(
    private readonly o: {
      folderFor: (assignmentId: string) => Promise<WorkFolder | null>;
      upload: ExportUploader;
      log: Logger;
      chunkBytes?: number;
      tar?: string;
    },
  ) {}

  /** Starts new export commands in the background; returns how many started. */
  accept(commands: readonly ExportCommand[]): number {
    let started = 0;
    for (const c of commands) {
      if (!UUID.test(c.exportId) || !UUID.test(c.assignmentId)) continue;
      const id = c.exportId.toLowerCase();
      if (this.seen.has(id)) continue;
      this.seen.add(id);
      if (this.seen.size > 256) this.seen.delete(this.seen.values().next().value as string);
      const run: Running = {
        assignmentId: c.assignmentId.toLowerCase(),
        abort: new AbortController(),
      };
      this.running.set(id, run);
      started += 1;
      void this.run(id, run)
        .catch((err) =>
          this.o.log.warn("work export failed", {
            exportId: id,
            error: err instanceof Error ? err.message : String(err),
          }),
        )
        .finally(() => this.running.delete(id));
    }
    return started;
  }

  /** Stops exports of an assignment (its wipe is about to start). */
  cancelAssignment(assignmentId: string): void {
    for (const run of this.running.values()) {
      if (run.assignmentId === assignmentId.toLowerCase()) run.abort.abort();
    }
  }

  /** Stops every export (agent shutdown). */
  stopAll(): void {
    for (const run of this.running.values()) run.abort.abort();
  }

  get active(): number {
    return this.running.size;
  }

  private async run(exportId: string, run: Running): Promise<void> {
    const { signal } = run.abort;
    const log = this.o.log.child({ exportId, assignmentId: run.assignmentId });
    let seq = 0;
    const send = (chunk: Omit<ExportChunk, "exportId" | "seq">) =>
      this.o.upload({ exportId, seq: seq++, ...chunk }, signal);
    const folder = await this.o.folderFor(run.assignmentId);
    if (!folder) {
      await send({
        body: Buffer.from("this VM is not set up for you"),
        error: true,
        folderBytes: 0,
      });
      return;
    }
    const size = await folderBytes(folder.path);
    const first = await send({ body: Buffer.alloc(0), folderBytes: size });
    if (first !== 200) {
      log.info("work export refused by the server", { status: first, folderBytes: size });
      return;
    }
    const asUser =
      folder.uid !== undefined && process.getuid?.() === 0 && folder.uid !== 0
        ? { uid: folder.uid, gid: folder.gid }
        : {};
    const tar = spawn(
      this.o.tar ?? "tar",
      ["--ignore-failed-read", "-C", folder.path, "-czf", "-", "."],
      { ...asUser, stdio: ["ignore", "pipe", "pipe"], signal },
    );
    let stderr = "";
    tar.stderr.on("data", (d: Buffer) => {
      if (stderr.length < 2000) stderr += d.toString("utf8");
    });
    tar.on("error", () => {}); // reported through `exited` below
    const exited = new Promise<number | null>((resolve) =>
      tar.once("close", (code) => resolve(code)),
    );
    const limit = this.o.chunkBytes ?? EXPORT_CHUNK_BYTES;
    let parts: Buffer[] = [];
    let pending = 0;
    let sent = 0;
    try {
      for await (const data of tar.stdout as AsyncIterable<Buffer>) {
        parts.push(data);
        pending += data.length;
        while (pending >= limit) {
          const all = Buffer.concat(parts);
          const body = all.subarray(0, limit);
          parts = [all.subarray(limit)];
          pending = all.length - limit;
          const status = await send({ body });
          if (status !== 200) {
            log.info("work export stopped by the server", { status, bytes: sent });
            tar.kill("SIGKILL");
            return;
          }
          sent += body.length;
        }
      }
    } catch (err) {
      if (signal.aborted) {
        log.info("work export stopped: the assignment ends");
        return;
      }
      throw err;
    }
    const code = await exited;
    if (signal.aborted) return;
    if (code !== 0) {
      const reason = stderr.trim().split("\n").pop() ?? `tar exited with ${code}`;
      await send({ body: Buffer.from(reason.slice(0, 500)), error: true });
      log.warn("work export failed", { code, stderr: stderr.slice(0, 500) });
      return;
    }
    const body = Buffer.concat(parts);
    const status = await send({ body, done: true });
    log.info("work export sent", { bytes: sent + body.length, folderBytes: size, status });
  }
}

export type ArchiveOutcome = { ok: boolean; bytes?: number; error?: string };

/** `tar -czf -` of the folder, run as its owner where the agent is root, into `file`. */
async function tarInto(folder: WorkFolder, file: string, tar = "tar"): Promise<void> {
  const asUser =
    folder.uid !== undefined && process.getuid?.() === 0 && folder.uid !== 0
      ? { uid: folder.uid, gid: folder.gid }
      : {};
  const child = spawn(tar, ["--ignore-failed-read", "-C", folder.path, "-czf", "-", "."], {
    ...asUser,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    if (stderr.length < 2000) stderr += d.toString("utf8");
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code) => resolve(code));
  });
  await pipeline(child.stdout, createWriteStream(file, { mode: 0o600 }));
  const code = await exited;
  if (code !== 0) {
    throw new Error(stderr.trim().split("\n").pop() || `tar exited with ${code}`);
  }
}

/** PUTs `file` to a presigned URL with its Content-Length; resolves with the HTTP status. */
function putFile(url: string, file: string, size: number, timeoutMs: number): Promise<number> {
  const target = new URL(url);
  const lib = target.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(
      target,
      {
        method: "PUT",
        headers: { "content-length": size, "content-type": "application/gzip" },
        timeout: timeoutMs,
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("the upload timed out")));
    req.on("error", reject);
    createReadStream(file).on("error", reject).pipe(req);
  });
}

/**
 * Before a wipe on a fleet with a work archive: packs the work folder into a temporary file and
 * PUTs it to the presigned URL, a bounded number of tries. Never throws: the wipe runs after it
 * whatever happened, and the outcome goes back with the wipe's acknowledgement.
 */
export async function archiveWorkFolder(
  folder: WorkFolder | null,
  url: string,
  o: { log: Logger; attempts?: number; retryMs?: number; timeoutMs?: number; tar?: string },
): Promise<ArchiveOutcome> {
  if (!folder) return { ok: false, error: "no work folder for this assignment" };
  const dir = await mkdtemp(join(tmpdir(), "lablink-archive-"));
  const file = join(dir, "work.tar.gz");
  try {
    await tarInto(folder, file, o.tar);
    const { size } = await stat(file);
    const attempts = o.attempts ?? 3;
    let last = "";
    for (let i = 1; i <= attempts; i++) {
      try {
        const status = await putFile(url, file, size, o.timeoutMs ?? 600_000);
        if (status >= 200 && status < 300) return { ok: true, bytes: size };
        last = `storage answered HTTP ${status}`;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
      }
      o.log.warn("work archive upload failed", { attempt: i, error: last });
      if (i < attempts) await new Promise((r) => setTimeout(r, (o.retryMs ?? 2_000) * i));
    }
    return { ok: false, bytes: size, error: `upload failed after ${attempts} tries: ${last}` };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
