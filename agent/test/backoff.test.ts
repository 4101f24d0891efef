import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
import { Backoff, backoffDelay, childSignal, sleep, untilAborted } from "../src/backoff";

describe("backoff with full jitter", () => {
  it("draws from [0, base * 2^attempt], floored at minMs and capped at 60 s", () => {
    expect(backoffDelay(0, { random: () => 0.999999 })).toBe(999);
    expect(backoffDelay(3, { random: () => 0.5 })).toBe(4_000);
    expect(backoffDelay(0, { random: () => 0 })).toBe(100);
    expect(backoffDelay(6, { random: () => 0.999999 })).toBe(59_999);
    expect(backoffDelay(7, { random: () => 1 })).toBe(60_000);
    expect(backoffDelay(10_000, { random: () => 1 })).toBe(60_000);
  });

  it("stays within bounds for any draw and attempt", () => {
    for (let attempt = 0; attempt < 80; attempt++) {
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(attempt);
        expect(d).toBeGreaterThanOrEqual(100);
        expect(d).toBeLessThanOrEqual(Math.min(60_000, 1_000 * 2 ** attempt));
        expect(Number.isFinite(d)).toBe(true);
      }
    }
  });

  it("Backoff grows per failure and resets", () => {
    const b = new Backoff({ random: () => 1 });
    expect([b.next(), b.next(), b.next(), b.next()]).toEqual([1_000, 2_000, 4_000, 8_000]);
    expect(b.failures).toBe(4);
    for (let i = 0; i < 100; i++) b.next();
    expect(b.next()).toBe(60_000);
    b.reset();
    expect(b.failures).toBe(0);
    expect(b.next()).toBe(1_000);
  });

  it("sleep ends early on abort; untilAborted gives up on abort", async () => {
    const c = new AbortController();
    const started = Date.now();
    setTimeout(() => c.abort(), 20);
    await sleep(10_000, c.signal);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(await untilAborted(new Promise(() => {}), c.signal)).toBeUndefined();
    expect(await untilAborted(Promise.resolve(7), new AbortController().signal)).toBe(7);
  });
});

describe("childSignal", () => {
  it("aborts with the parent or on timeout, and detaches from the parent when done", async () => {
    const parent = new AbortController();
    for (let i = 0; i < 100; i++) childSignal(parent.signal, 10_000).done();
    expect(EventEmitter.getEventListeners(parent.signal, "abort")).toHaveLength(0);

    const a = childSignal(parent.signal, 10_000);
    parent.abort();
    expect(a.signal.aborted).toBe(true);
    a.done();

    const b = childSignal(new AbortController().signal, 10);
    await new Promise((r) => setTimeout(r, 30));
    expect(b.signal.aborted).toBe(true);
    expect((b.signal.reason as Error).name).toBe("TimeoutError");
    b.done();
  });
});
