import http from "node:http";

/**
 * A client of the original LabLink client API, written from its contract (docs/original-api.md),
 * not from the original's code: what a VM built from an original LabLink client image sends, with
 * the three variables such an image is configured with.
 */
export type LegacyEnv = { ALLOCATOR_URL: string; API_TOKEN: string; VM_NAME: string };

export type LegacyReply = { status: number; body: unknown };

export class LegacyClient {
  constructor(
    readonly env: LegacyEnv,
    /** Sockets for many calls held open at once (the waiting /vm_startup). */
    private readonly agent: http.Agent = new http.Agent({ keepAlive: false }),
  ) {}

  /** One call; `headers` replaces the Authorization header (refusal tests). */
  request(
    method: "GET" | "POST",
    path: string,
    body?: unknown,
    options: { authorization?: string | null; rawBody?: string; signal?: AbortSignal } = {},
  ): Promise<LegacyReply> {
    const url = new URL(path, this.env.ALLOCATOR_URL);
    const payload =
      options.rawBody ?? (body === undefined ? undefined : Buffer.from(JSON.stringify(body)));
    const headers: Record<string, string> = { accept: "application/json" };
    const auth =
      options.authorization === undefined ? `Bearer ${this.env.API_TOKEN}` : options.authorization;
    if (auth !== null) headers.authorization = auth;
    if (payload !== undefined) {
      headers["content-type"] = "application/json";
      headers["content-length"] = String(Buffer.byteLength(payload));
    }
    return new Promise((resolve, reject) => {
      const req = http.request(
        url,
        { method, headers, agent: this.agent, signal: options.signal },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            let parsed: unknown = text;
            try {
              parsed = JSON.parse(text);
            } catch {
              // Left as text: the tests assert on it.
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(payload);
    });
  }

  /** Blocks until a researcher has connected through Chrome Remote Desktop. */
  vmStartup(signal?: AbortSignal) {
    return this.request("POST", "/vm_startup", { hostname: this.env.VM_NAME }, { signal });
  }

  gpuHealth(gpuStatus: "Healthy" | "Unhealthy" | "N/A") {
    return this.request("POST", "/api/gpu_health", {
      hostname: this.env.VM_NAME,
      gpu_status: gpuStatus,
    });
  }

  inUse(status: boolean) {
    return this.request("POST", "/api/update_inuse_status", {
      hostname: this.env.VM_NAME,
      status,
    });
  }

  heartbeat() {
    return this.request("POST", "/api/heartbeat", { vm_id: this.env.VM_NAME });
  }

  reportStatus(status: string) {
    return this.request("POST", "/api/vm-status", { hostname: this.env.VM_NAME, status });
  }

  status() {
    return this.request("GET", `/api/vm-status/${encodeURIComponent(this.env.VM_NAME)}`);
  }

  /** A batch of log lines; `docker`: the container's log group, else cloud-init's. */
  logs(messages: string[], docker: boolean) {
    return this.request("POST", "/api/vm-logs", {
      log_group: docker ? "lablink-client-docker" : "lablink-cloud-init",
      log_stream: this.env.VM_NAME,
      messages,
    });
  }

  metrics(m: Record<string, number>) {
    return this.request("POST", `/api/vm-metrics/${encodeURIComponent(this.env.VM_NAME)}`, m);
  }
}
