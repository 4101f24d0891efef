import { appendFile, rename, rm, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { LogsInput } from "../../server/protocol/agent";
import {
  LOG_BATCH_MAX as SERVER_BATCH_MAX,
  LOG_LINE_MAX as SERVER_LINE_MAX,
} from "../../server/protocol/agent";
import { createLogger, silentLogger } from "../src/log";
import {
  guessLevel,
  LOG_BATCH_MAX,
  LOG_LINE_MAX,
  LogShipper,
  type ShipperOptions,
  scrubSecrets,
} from "../src/logs/shipper";
import { agentLogTap, tailFiles } from "../src/logs/sources";
import { FileTail, truncateLine } from "../src/logs/tail";
import { TransportError } from "../src/loop";
import { eventually, tempDir } from "./helpers";

const VM = "00000000-0000-4000-8000-000000000001";
const TOKEN = `lla_${"a".repeat(32)}_${"B".repeat(43)}`;
const shippers: LogShipper[] = [];
afterEach(async () => {
  await Promise.all(shippers.splice(0).map((s) => s.stop(10)));
});

function shipper(overrides: Partial<ShipperOptions> = {}) {
  const batches: LogsInput[] = [];
  const s = new LogShipper({
    vmId: VM,
    bootId: "boot-1",
    send: async (input) => {
      batches.push(structuredClone(input));
      return { accepted: input.lines.length };
    },
    maxBuffered: 100,
    batchLines: 10,
    flushMs: 50,
    maxLineChars: 200,
    log: silentLogger,
    backoff: { baseMs: 10, capMs: 20, minMs: 5 },
    ...overrides,
  });
  shippers.push(s);
  return { s, batches };
}

describe("log shipper", () => {
  it("uses the server's limits", () => {
    expect(LOG_BATCH_MAX).toBe(SERVER_BATCH_MAX);
    expect(LOG_LINE_MAX).toBe(SERVER_LINE_MAX);
  });

  it("batches by size at once and by time otherwise", async () => {
    const { s, batches } = shipper({ flushMs: 60_000 });
    s.start();
    for (let i = 0; i < 25; i++) s.push("agent", "info", `line ${i}`);
    await eventually(() => batches.length === 2, 2_000, "two full batches");
    expect(batches.map((b) => b.lines.length)).toEqual([10, 10]);
    expect(batches[0]?.lines[0]).toMatchObject({
      source: "agent",
      level: "info",
      message: "line 0",
    });
    expect(s.pending).toBe(5); // not a full batch: waits for the timer

    const timed = shipper({ flushMs: 50 });
    timed.s.start();
    timed.s.push("container", "warn", "only one");
    await eventually(() => timed.batches.length === 1, 2_000, "timed flush");
    expect(timed.batches[0]).toMatchObject({ vmId: VM, bootId: "boot-1" });
    expect(timed.batches[0]?.lines).toHaveLength(1);
  });

  it("keeps at most maxBuffered lines, drops the oldest and reports how many", async () => {
    let up = false;
    const batches: LogsInput[] = [];
    const { s } = shipper({
      maxBuffered: 20,
      send: async (input) => {
        if (!up) throw new TransportError("unavailable", "down");
        batches.push(structuredClone(input));
        return {};
      },
    });
    s.start();
    for (let i = 0; i < 50; i++) s.push("agent", "info", `line ${i}`);
    expect(s.pending).toBe(20);
    expect(s.droppedCount).toBe(30);
    up = true;
    await eventually(() => s.pending === 0, 3_000, "buffer drained");
    expect(batches[0]?.dropped).toBe(30);
    expect(batches[0]?.lines[0]?.message).toBe("line 30");
    expect(batches.flatMap((b) => b.lines.map((l) => l.message))).toEqual(
      Array.from({ length: 20 }, (_, i) => `line ${30 + i}`),
    );
    expect(batches[1]?.dropped).toBeUndefined();
    expect(s.droppedCount).toBe(0);
  });

  it("retries a failed batch with backoff and loses nothing; a refused batch is dropped", async () => {
    let failures = 3;
    const batches: LogsInput[] = [];
    const { s } = shipper({
      send: async (input) => {
        if (failures-- > 0) throw new TransportError("unavailable", "503", { status: 503 });
        batches.push(structuredClone(input));
        return {};
      },
    });
    s.start();
    s.push("agent", "info", "survives");
    await eventually(() => batches.length === 1, 3_000, "retried batch");
    expect(batches[0]?.lines.map((l) => l.message)).toEqual(["survives"]);

    let calls = 0;
    const refused = shipper({
      send: async () => {
        calls += 1;
        throw new TransportError("rejected", "bad", { status: 400 });
      },
    });
    refused.s.start();
    refused.s.push("agent", "info", "poison");
    await eventually(() => calls === 1 && refused.s.pending === 0, 2_000, "dropped batch");
  });

  it("push never blocks: a server that never answers leaves the caller free", async () => {
    const { s } = shipper({ send: () => new Promise(() => {}), requestTimeoutMs: 50 });
    s.start();
    const started = Date.now();
    for (let i = 0; i < 1_000; i++) s.push("agent", "info", `x${i}`);
    expect(Date.now() - started).toBeLessThan(200);
    expect(s.pending).toBe(100);
  });

  it("cuts long lines to maxLineChars, marked", () => {
    const { s } = shipper({ maxLineChars: 50 });
    s.push("container", "info", "y".repeat(10_000));
    const cut = truncateLine("y".repeat(10_000), 50);
    expect(cut).toHaveLength(50);
    expect(cut.endsWith("…[truncated]")).toBe(true);
    expect(s.pending).toBe(1);
  });

  it("scrubs tokens, bearer headers, CRD codes and PINs from free text", () => {
    const text = [
      `token ${TOKEN} leaked`,
      "Authorization: Bearer abcdefghijklmnop",
      'start-host --code="4/0AbCdEfGhIjKlMnOpQrStUv" --name=x',
      "code 4/0AbCdEfGhIjKlMnOpQrStUv in the output",
      '{"pin":"493817","other":1}',
      "pin=493817",
      `lle_${"c".repeat(32)}_${"D".repeat(43)}`,
    ].join("\n");
    const out = scrubSecrets(text);
    for (const secret of [
      TOKEN,
      "B".repeat(43),
      "abcdefghijklmnop",
      "4/0AbCdEfGhIjKlMnOpQrStUv",
      "493817",
      "D".repeat(43),
    ]) {
      expect(out).not.toContain(secret);
    }
    expect(out).toContain("leaked");
  });

  it("ships the agent's own info+ entries, redacted, never debug; secrets cannot get through", async () => {
    const { s, batches } = shipper({ batchLines: 1 });
    s.start();
    const log = createLogger({
      level: "debug",
      write: () => {},
      tap: agentLogTap(s),
      bindings: { vmId: VM },
    });
    log.debug("polled", { state: "ready" });
    log.info("registered", {
      state: "ready",
      token: TOKEN,
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    log.error("start-host failed", {
      error: new Error(`exit 1: --code=4/0AbCdEfGhIjKlMnOpQrStUv pin 493817 ${TOKEN}`),
      pin: "493817",
    });
    await eventually(() => batches.length === 2, 2_000, "two entries");
    const shipped = batches.flatMap((b) => b.lines);
    expect(shipped.map((l) => [l.source, l.level])).toEqual([
      ["agent", "info"],
      ["agent", "error"],
    ]);
    expect(shipped[0]?.message.startsWith("registered {")).toBe(true);
    const all = JSON.stringify(shipped);
    for (const secret of [TOKEN, "B".repeat(43), "4/0AbCdEfGhIjKlMnOpQrStUv", "493817"]) {
      expect(all).not.toContain(secret);
    }
  });

  it("guesses levels of plain lines", () => {
    expect(guessLevel("2026 ERROR: could not pull image")).toBe("error");
    expect(guessLevel("Traceback (most recent call last):")).toBe("error");
    expect(guessLevel("WARNING: deprecated")).toBe("warn");
    expect(guessLevel("Reading package lists...")).toBe("info");
  });
});

describe("file tail (real temp files)", () => {
  async function tail(path: string, startBytes?: number) {
    const lines: string[] = [];
    const t = new FileTail({ path, maxLineChars: 100, onLine: (l) => lines.push(l), startBytes });
    return { t, lines };
  }

  it("waits for a missing file, then follows appends, holding a partial line until it ends", async () => {
    const path = join(await tempDir(), "cloud-init-output.log");
    const { t, lines } = await tail(path);
    await t.poll();
    expect(lines).toEqual([]);
    await writeFile(path, "one\ntwo\nthr");
    await t.poll();
    expect(lines).toEqual(["one", "two"]);
    await appendFile(path, "ee\r\n\nfour\n");
    await t.poll();
    expect(lines).toEqual(["one", "two", "three", "four"]);
    await t.close();
  });

  it("follows a rotation (rename + new file): the old file's rest first, then the new one", async () => {
    const dir = await tempDir();
    const path = join(dir, "container.log");
    const { t, lines } = await tail(path);
    await writeFile(path, "a1\n");
    await t.poll();
    await appendFile(path, "a2\n");
    await rename(path, `${path}.1`);
    await writeFile(path, "b1\n");
    await t.poll();
    await appendFile(path, "b2\n");
    await t.poll();
    expect(lines).toEqual(["a1", "a2", "b1", "b2"]);
    await t.close();
  });

  it("starts over after a truncation in place (copytruncate)", async () => {
    const path = join(await tempDir(), "x.log");
    const { t, lines } = await tail(path);
    await writeFile(path, "before-1\nbefore-2\n");
    await t.poll();
    await truncate(path, 0);
    await appendFile(path, "after\n");
    await t.poll();
    expect(lines).toEqual(["before-1", "before-2", "after"]);
    await t.close();
  });

  it("cuts long lines and a line that never ends; multi-byte characters across reads stay whole", async () => {
    const path = join(await tempDir(), "x.log");
    const lines: string[] = [];
    const t = new FileTail({ path, maxLineChars: 20, onLine: (l) => lines.push(l), chunkBytes: 7 });
    await writeFile(path, `${"z".repeat(50)}\nüüüüüü\n${"n".repeat(200)}`);
    // Each poll reads a bounded amount (16 chunks): a few polls get through the file.
    for (let i = 0; i < 4; i++) await t.poll();
    expect(lines[0]).toHaveLength(20);
    expect(lines[0]?.endsWith("…[truncated]")).toBe(true);
    expect(lines[1]).toBe("üüüüüü");
    expect(lines[2]).toHaveLength(20);
    await t.close();
  });

  it("an agent started late ships only the end of a long file, from a whole line", async () => {
    const path = join(await tempDir(), "x.log");
    await writeFile(path, `${Array.from({ length: 100 }, (_, i) => `line-${i}`).join("\n")}\n`);
    const { t, lines } = await tail(path, 30);
    await t.poll();
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThan(5);
    expect(lines.at(-1)).toBe("line-99");
    for (const l of lines) expect(l).toMatch(/^line-\d+$/);
    await t.close();
  });
});

describe("log file positions survive an agent restart", () => {
  it("a restarted agent resumes where the last one stopped; a replaced file starts over", async () => {
    const dir = await tempDir();
    const file = join(dir, "cloud-init-output.log");
    const positions = join(dir, "log-positions.json");
    const shipped: string[] = [];
    const fakeShipper = {
      push: (_source: string, _level: string, message: string) => shipped.push(message),
    } as unknown as LogShipper;
    const run = () =>
      tailFiles({
        shipper: fakeShipper,
        files: [{ source: "cloud-init", path: file }],
        maxLineChars: 100,
        pollMs: 60_000,
        positionsFile: positions,
        log: silentLogger,
      });
    await writeFile(file, "boot-1 line-1\nboot-1 line-2\npart");
    const first = run();
    await first.pollNow();
    await first.stop();
    expect(shipped).toEqual(["boot-1 line-1", "boot-1 line-2"]);

    await appendFile(file, "ial\nboot-2 line-1\n");
    const second = run();
    await second.pollNow();
    await second.stop();
    expect(shipped).toEqual(["boot-1 line-1", "boot-1 line-2", "partial", "boot-2 line-1"]);

    await rm(file);
    await writeFile(file, "new file\n");
    const third = run();
    await third.pollNow();
    await third.stop();
    expect(shipped.at(-1)).toBe("new file");
  });
});
