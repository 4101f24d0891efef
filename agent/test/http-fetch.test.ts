import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_RESPONSE_BYTES, nodeHttpFetch } from "../src/http-fetch";

/** A real HTTP server on loopback; each path behaves differently. */
let base: string;
const seen: { method?: string; headers?: IncomingMessage["headers"]; body?: string }[] = [];
const sockets = new Set<number>();
const server = createServer((req: IncomingMessage, res: ServerResponse) => {
  sockets.add(req.socket.remotePort ?? 0);
  let body = "";
  req.on("data", (c: Buffer) => {
    body += c.toString();
  });
  req.on("end", () => {
    seen.push({ method: req.method, headers: req.headers, body });
    if (req.url === "/json") {
      res.writeHead(200, { "content-type": "application/json", "x-thing": "yes" });
      res.end(JSON.stringify({ echo: body, unicode: "°C — ✓" }));
    } else if (req.url === "/unauthorized") {
      res.writeHead(401, { "content-type": "application/json" });
      res.end('{"error":"no"}');
    } else if (req.url === "/hang") {
      // Never answers: only the caller's signal ends it (a long poll).
    } else if (req.url === "/huge") {
      res.writeHead(200);
      const chunk = Buffer.alloc(1024 * 1024, 97);
      for (let i = 0; i <= MAX_RESPONSE_BYTES / chunk.length; i++) res.write(chunk);
      res.end();
    } else {
      res.writeHead(404);
      res.end("not here");
    }
  });
});

beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe("nodeHttpFetch (the agent's fetch without undici)", () => {
  it("sends method, headers and body, and reads status, headers and JSON", async () => {
    const res = await nodeHttpFetch(`${base}/json`, {
      method: "POST",
      headers: { authorization: "Bearer abc", "content-type": "application/json" },
      body: '{"a":"é"}',
    });
    expect(res.ok).toBe(true);
    expect(res.status).toBe(200);
    expect(res.headers.get("X-Thing")).toBe("yes");
    expect(res.headers.get("x-missing")).toBeNull();
    expect(await res.json()).toEqual({ echo: '{"a":"é"}', unicode: "°C — ✓" });
    const last = seen.at(-1);
    expect(last?.method).toBe("POST");
    expect(last?.headers?.authorization).toBe("Bearer abc");
    // Content-Length counts bytes, not characters.
    expect(last?.headers?.["content-length"]).toBe(String(Buffer.byteLength('{"a":"é"}')));
  });

  it("reports a non-2xx status with its body", async () => {
    const res = await nodeHttpFetch(`${base}/unauthorized`, { method: "GET" });
    expect(res.ok).toBe(false);
    expect(res.status).toBe(401);
    expect(await res.text()).toBe('{"error":"no"}');
  });

  it("keeps connections alive between requests", async () => {
    sockets.clear();
    for (let i = 0; i < 5; i++) await (await nodeHttpFetch(`${base}/json`)).text();
    expect(sockets.size).toBe(1);
  });

  it("an aborted signal ends a request that is waiting for an answer", async () => {
    const controller = new AbortController();
    const pending = nodeHttpFetch(`${base}/hang`, { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(pending).rejects.toMatchObject({ name: "AbortError" });
    const timedOut = nodeHttpFetch(`${base}/hang`, { signal: AbortSignal.timeout(50) });
    await expect(timedOut).rejects.toMatchObject({ name: "TimeoutError" });
    await expect(
      nodeHttpFetch(`${base}/json`, { signal: AbortSignal.abort() }),
    ).rejects.toMatchObject({ name: "AbortError" });
  });

  it("refuses a response body over the limit instead of buffering it", async () => {
    const res = await nodeHttpFetch(`${base}/huge`);
    await expect(res.text()).rejects.toThrow(/larger than/);
  });

  it("fails clearly when nothing listens, and for unsupported URLs", async () => {
    await expect(nodeHttpFetch("http://127.0.0.1:9/x")).rejects.toMatchObject({
      code: "ECONNREFUSED",
    });
    await expect(nodeHttpFetch("ftp://example.org/x")).rejects.toThrow(/unsupported URL/);
  });
});
