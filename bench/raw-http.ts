import net from "node:net";

/**
 * A lean HTTP/1.1 keep-alive client for load generation: `connections` sockets, one request in
 * flight per socket (no pipelining, like an agent), requests queued until a socket is free.
 * Node's `http.request` costs ~0.3 ms of CPU per call, which on a 2-core machine takes CPU from
 * the server being measured; this writes prebuilt request bytes and reads only the status line,
 * Content-Length and body, like wrk or autocannon do.
 *
 * It understands only what the servers under test send: a status line, headers with
 * Content-Length (no chunked encoding), then the body.
 */
export type RawResponse = { status: number; body: Buffer };

type Pending = { bytes: Buffer; resolve: (r: RawResponse) => void };

class Connection {
  private socket: net.Socket;
  private buffer: Buffer = Buffer.alloc(0);
  private current: Pending | null = null;
  private closed = false;

  constructor(
    port: number,
    private readonly next: () => Pending | undefined,
    private readonly retry: (p: Pending) => void,
  ) {
    this.socket = net.connect({ port, host: "127.0.0.1", noDelay: true });
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.socket.on("error", () => this.fail());
    this.socket.on("close", () => this.fail());
  }

  get busy(): boolean {
    return this.current !== null;
  }

  get dead(): boolean {
    return this.closed;
  }

  send(p: Pending) {
    this.current = p;
    this.socket.write(p.bytes);
  }

  close() {
    this.closed = true;
    this.socket.destroy();
  }

  private fail() {
    if (this.closed) return;
    this.closed = true;
    const p = this.current;
    this.current = null;
    if (p) p.resolve({ status: 0, body: Buffer.alloc(0) });
    // Queued work goes to the other connections.
    const queued = this.next();
    if (queued) this.retry(queued);
  }

  private onData(chunk: Buffer) {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const end = this.buffer.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = this.buffer.toString("latin1", 0, end);
      const status = Number(head.slice(9, 12));
      const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      const length = m?.[1] ? Number(m[1]) : 0;
      if (this.buffer.length < end + 4 + length) return;
      const body = this.buffer.subarray(end + 4, end + 4 + length);
      this.buffer = this.buffer.subarray(end + 4 + length);
      const p = this.current;
      this.current = null;
      p?.resolve({ status, body });
      const queued = this.next();
      if (queued) this.send(queued);
    }
  }
}

export class RawHttpClient {
  private readonly queue: Pending[] = [];
  private head = 0;
  private readonly conns: Connection[];

  constructor(
    private readonly port: number,
    connections: number,
  ) {
    this.conns = Array.from(
      { length: connections },
      () =>
        new Connection(
          port,
          () => this.take(),
          (p) => this.dispatch(p),
        ),
    );
  }

  /** POSTs a JSON body; resolves with status 0 when the connection failed. */
  post(path: string, authorization: string, json: string): Promise<RawResponse> {
    const body = Buffer.from(json);
    const headers =
      `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${this.port}\r\n` +
      `Content-Type: application/json\r\nAuthorization: ${authorization}\r\n` +
      `Content-Length: ${body.length}\r\n\r\n`;
    return new Promise((resolve) =>
      this.dispatch({ bytes: Buffer.concat([Buffer.from(headers, "latin1"), body]), resolve }),
    );
  }

  close() {
    for (const c of this.conns) c.close();
  }

  private take(): Pending | undefined {
    if (this.head >= this.queue.length) return undefined;
    const p = this.queue[this.head++];
    if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    return p;
  }

  private dispatch(p: Pending) {
    const free = this.conns.find((c) => !c.busy && !c.dead);
    if (free) free.send(p);
    else if (this.conns.every((c) => c.dead)) p.resolve({ status: 0, body: Buffer.alloc(0) });
    else this.queue.push(p);
  }
}
