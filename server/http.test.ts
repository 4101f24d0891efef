import type { IncomingHttpHeaders } from "node:http";
import { describe, expect, it } from "vitest";
import {
  clientIp,
  parseTrustProxy,
  prepareRequestHeaders,
  resolveClientIp,
  type TrustProxy,
} from "./http";

const none: TrustProxy = { kind: "none" };
const oneHop: TrustProxy = { kind: "hops", hops: 1 };

function prepared(headers: IncomingHttpHeaders, peer: string, trust: TrustProxy) {
  const h = { ...headers };
  prepareRequestHeaders(h, peer, trust);
  return h;
}

describe("LABLINK_TRUST_PROXY", () => {
  it("reads off, a hop count and a list of addresses and ranges", () => {
    expect(parseTrustProxy(undefined)).toEqual(none);
    expect(parseTrustProxy("false")).toEqual(none);
    expect(parseTrustProxy("0")).toEqual(none);
    expect(parseTrustProxy("true")).toEqual(oneHop);
    expect(parseTrustProxy("2")).toEqual({ kind: "hops", hops: 2 });
    expect(parseTrustProxy("10.0.0.0/8, 192.0.2.7 ::1")).toEqual({
      kind: "list",
      entries: ["10.0.0.0/8", "192.0.2.7", "::1"],
    });
    expect(parseTrustProxy("proxy.example.edu")).toMatch(/not an IP address or CIDR range/);
    expect(parseTrustProxy("10.0.0.0/33")).toMatch(/not an IP address/);
    expect(parseTrustProxy("11")).toMatch(/at most 10/);
  });
});

describe("client IP", () => {
  it("is the socket's address when no proxy is trusted, whatever the headers say", () => {
    const h = prepared(
      { "x-forwarded-for": "203.0.113.5", "x-real-ip": "203.0.113.6" },
      "198.51.100.1",
      none,
    );
    expect(h["x-lablink-client-ip"]).toBe("198.51.100.1");
    expect(h["x-forwarded-for"]).toBeUndefined();
    expect(h["x-real-ip"]).toBeUndefined();
  });

  it("behind one trusted proxy is the hop that proxy saw, not the left-most entry a client wrote", () => {
    // The client sent "X-Forwarded-For: 1.2.3.4"; the proxy appended the address it saw.
    expect(resolveClientIp("10.0.0.2", "1.2.3.4, 203.0.113.9", oneHop)).toBe("203.0.113.9");
    // A rate limit keyed on it cannot be dodged by writing a new address each time.
    const seen = new Set(
      ["5.5.5.5", "6.6.6.6", "7.7.7.7, 8.8.8.8"].map((spoof) =>
        resolveClientIp("10.0.0.2", `${spoof}, 203.0.113.9`, oneHop),
      ),
    );
    expect([...seen]).toEqual(["203.0.113.9"]);
  });

  it("counts hops from the right", () => {
    const two: TrustProxy = { kind: "hops", hops: 2 };
    expect(resolveClientIp("10.0.0.2", "9.9.9.9, 203.0.113.9, 10.0.0.1", two)).toBe("203.0.113.9");
    // A chain shorter than the proxies configured: the left-most is all there is.
    expect(resolveClientIp("10.0.0.2", "203.0.113.9", two)).toBe("203.0.113.9");
  });

  it("with a list, skips trusted hops from the right and ignores headers from anyone else", () => {
    const list = parseTrustProxy("10.0.0.0/8") as TrustProxy;
    expect(resolveClientIp("10.0.0.2", "9.9.9.9, 203.0.113.9, 10.1.1.1", list)).toBe("203.0.113.9");
    // A client connecting directly cannot claim another address.
    expect(resolveClientIp("198.51.100.1", "10.0.0.3", list)).toBe("198.51.100.1");
    const h = prepared(
      { "x-forwarded-for": "10.0.0.3", "x-forwarded-host": "lablink.example.edu" },
      "198.51.100.1",
      list,
    );
    expect(h["x-forwarded-host"]).toBeUndefined();
    expect(h["x-lablink-client-ip"]).toBe("198.51.100.1");
  });

  it("normalizes IPv4-mapped addresses and skips hops that are not addresses", () => {
    expect(resolveClientIp("::ffff:127.0.0.1", undefined, none)).toBe("127.0.0.1");
    expect(resolveClientIp("10.0.0.2", "203.0.113.9, unknown", oneHop)).toBe("10.0.0.2");
  });
});

describe("request headers at the edge", () => {
  it("drop x-lablink-* headers a client sent and mark forwarded requests", () => {
    const h = prepared(
      {
        host: "localhost:3000",
        "x-lablink-peer": "127.0.0.1",
        "x-lablink-client-ip": "127.0.0.1",
        "x-forwarded-host": "localhost",
      },
      "198.51.100.1",
      none,
    );
    expect(h).toMatchObject({
      "x-lablink-peer": "198.51.100.1",
      "x-lablink-client-ip": "198.51.100.1",
      "x-lablink-forwarded": "1",
    });
    expect(h["x-forwarded-host"]).toBeUndefined();
    expect(clientIp(new Headers(h as Record<string, string>))).toBe("198.51.100.1");
  });

  it("keep a trusted proxy's host and protocol", () => {
    const h = prepared(
      { "x-forwarded-host": "lablink.example.edu", "x-forwarded-proto": "https" },
      "127.0.0.1",
      oneHop,
    );
    expect(h).toMatchObject({
      "x-forwarded-host": "lablink.example.edu",
      "x-forwarded-proto": "https",
      "x-lablink-forwarded": "1",
    });
  });

  it("name the public URL as the host when one is configured, whatever the client said", () => {
    const h: IncomingHttpHeaders = {
      host: "lablink.attacker.example",
      "x-forwarded-host": "lablink.attacker.example",
    };
    prepareRequestHeaders(h, "127.0.0.1", oneHop, "https://lablink.example.edu");
    expect(h).toMatchObject({
      "x-forwarded-host": "lablink.example.edu",
      "x-forwarded-proto": "https",
    });
  });

  it("say nothing of a request that did not pass through them", () => {
    expect(clientIp(new Headers({ "x-forwarded-for": "203.0.113.5" }))).toBeNull();
  });
});
