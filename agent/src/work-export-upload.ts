import http from "node:http";
import https from "node:https";
import type { ExportChunk } from "./work-export";

/**
 * POSTs one work-export chunk to `${serverUrl}/api/agent/export/<id>` with the agent's token
 * (node:http, like http-fetch.ts: no undici). Resolves with the HTTP status; network errors reject.
 */
export function postExportChunk(
  serverUrl: string,
  token: string,
  chunk: ExportChunk,
  signal: AbortSignal,
): Promise<number> {
  const query = new URLSearchParams({ seq: String(chunk.seq) });
  if (chunk.done) query.set("done", "1");
  if (chunk.error) query.set("error", "1");
  // A query parameter, not a header: the server drops every x-lablink-* header a client sends.
  if (chunk.folderBytes !== undefined) query.set("folderBytes", String(chunk.folderBytes));
  const url = new URL(
    `${serverUrl.replace(/\/+$/, "")}/api/agent/export/${encodeURIComponent(chunk.exportId)}?${query}`,
  );
  const headers: Record<string, string | number> = {
    authorization: `Bearer ${token}`,
    "content-type": "application/octet-stream",
    "content-length": chunk.body.length,
  };
  const lib = url.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(url, { method: "POST", headers, signal }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(chunk.body);
  });
}
