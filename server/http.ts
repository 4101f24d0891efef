import type { IncomingHttpHeaders } from "node:http";
import { BlockList, isIP } from "node:net";

/**
 * The edge of the web process: what a request's headers may say about where it came from.
 *
 * `server/web.ts` runs `prepareRequestHeaders` on every request before anything else reads it.
 * Afterwards the only headers that speak about the client are the ones set here, under the
 * `x-lablink-` prefix (any a client sent are dropped first):
 *  - `x-lablink-peer`: the socket's address;
 *  - `x-lablink-client-ip`: the client, from the socket or, behind a trusted proxy, from the
 *    right-most untrusted `X-Forwarded-For` hop;
 *  - `x-lablink-forwarded`: "1" when the request arrived carrying any forwarding header, trusted
 *    or not (development sign-in refuses those: Next adds X-Forwarded-* itself, so their absence
 *    later means nothing).
 * Forwarding headers (`X-Forwarded-For/-Host/-Proto/-Port`, `Forwarded`, `X-Real-IP`) survive
 * only when the socket's peer is a trusted proxy. With a public URL configured, X-Forwarded-Host
 * and -Proto are set from it on every request: Auth.js builds the links it mails and the URLs of
 * server-action sign-ins from them (else from the Host header, which a client chooses), and Next
 * keeps X-Forwarded-* it finds.
 */

/** Who may set forwarding headers: nobody, the N proxies nearest the server, or listed addresses. */
export type TrustProxy =
  | { kind: "none" }
  | { kind: "hops"; hops: number }
  | { kind: "list"; entries: readonly string[] };

const FORWARDING = [
  "x-forwarded-for",
  "x-forwarded-host",
  "x-forwarded-proto",
  "x-forwarded-port",
  "forwarded",
  "x-real-ip",
] as const;

/**
 * Parses LABLINK_TRUST_PROXY: unset/false/0 (trust no proxy), true (one proxy in front), a hop
 * count (2: a load balancer and a proxy), or addresses and CIDR ranges (`10.0.0.0/8, 192.0.2.7`).
 * Returns a message for anything else.
 */
export function parseTrustProxy(raw: string | undefined): TrustProxy | string {
  const v = (raw ?? "").trim().toLowerCase();
  if (v === "" || v === "false" || v === "0") return { kind: "none" };
  if (v === "true") return { kind: "hops", hops: 1 };
  if (/^\d+$/.test(v)) {
    const hops = Number(v);
    return hops <= 10 ? { kind: "hops", hops } : "a hop count must be at most 10";
  }
  const entries = v.split(/[\s,]+/).filter(Boolean);
  for (const entry of entries) {
    if (!addToList(new BlockList(), entry))
      return `"${entry}" is not an IP address or CIDR range (or use true, false or a hop count)`;
  }
  return { kind: "list", entries };
}

function addToList(list: BlockList, entry: string): boolean {
  const [addr, bits, extra] = entry.split("/");
  const family = isIP(addr ?? "");
  if (!addr || !family || extra !== undefined) return false;
  const type = family === 4 ? "ipv4" : "ipv6";
  if (bits === undefined) {
    list.addAddress(addr, type);
    return true;
  }
  const prefix = Number(bits);
  if (!/^\d+$/.test(bits) || prefix > (family === 4 ? 32 : 128)) return false;
  list.addSubnet(addr, prefix, type);
  return true;
}

/** `::ffff:192.0.2.1` (an IPv4 client on a dual-stack socket) as `192.0.2.1`. */
export function normalizeIp(ip: string): string {
  const v = ip.trim();
  return v.toLowerCase().startsWith("::ffff:") && isIP(v.slice(7)) === 4 ? v.slice(7) : v;
}

// One checker per setting: this runs on every request (agents' heartbeats included).
const checkers = new WeakMap<TrustProxy, (ip: string) => boolean>();

function trustedBy(trust: TrustProxy): (ip: string) => boolean {
  let check = checkers.get(trust);
  if (check) return check;
  if (trust.kind !== "list") {
    const all = trust.kind === "hops";
    check = () => all;
  } else {
    const list = new BlockList();
    for (const e of trust.entries) addToList(list, e);
    check = (ip) => {
      const family = isIP(ip);
      return family !== 0 && list.check(ip, family === 4 ? "ipv4" : "ipv6");
    };
  }
  checkers.set(trust, check);
  return check;
}

/**
 * The client's address from the socket's peer and the X-Forwarded-For chain, trusting only the
 * configured proxies. Each proxy appends the address it received the request from, so the chain
 * reads client, proxy1, …, and the entries a client wrote itself are on the left: the client is
 * the right-most hop that is not a trusted proxy, never the left-most entry.
 */
export function resolveClientIp(
  peer: string,
  xForwardedFor: string | undefined,
  trust: TrustProxy,
): string {
  const socket = normalizeIp(peer);
  if (trust.kind === "none" || !xForwardedFor) return socket;
  const trusted = trustedBy(trust);
  if (!trusted(socket)) return socket;
  const chain = [...xForwardedFor.split(",").map(normalizeIp).filter(Boolean), socket];
  let client: string;
  if (trust.kind === "hops") {
    // The peer and the hops-1 entries before it are our proxies.
    client = chain[Math.max(0, chain.length - 1 - trust.hops)] ?? socket;
  } else {
    let i = chain.length - 1;
    while (i > 0 && trusted(chain[i] as string)) i--;
    client = chain[i] as string;
  }
  // A hop that is not an address (a proxy that writes "unknown", a client's junk): the nearest
  // trusted hop to its right is the best we know.
  if (isIP(client)) return client;
  const at = chain.lastIndexOf(client);
  return chain.slice(at + 1).find((hop) => isIP(hop)) ?? socket;
}

/** Rewrites a Node request's headers as described at the top of this file. */
export function prepareRequestHeaders(
  headers: IncomingHttpHeaders,
  peer: string | undefined,
  trust: TrustProxy,
  publicUrl?: string,
): void {
  for (const name of Object.keys(headers)) if (name.startsWith("x-lablink-")) delete headers[name];
  const forwarded = FORWARDING.some((h) => headers[h] !== undefined);
  const socket = normalizeIp(peer ?? "");
  const xff = headers["x-forwarded-for"];
  const chain = Array.isArray(xff) ? xff.join(",") : xff;
  const peerTrusted = trust.kind !== "none" && trustedBy(trust)(socket);
  const client = resolveClientIp(socket, peerTrusted ? chain : undefined, trust);
  if (!peerTrusted) for (const h of FORWARDING) delete headers[h];
  // Everything below reads the address LabLink decided on, never a header a client wrote.
  delete headers["x-real-ip"];
  if (publicUrl) {
    const pub = new URL(publicUrl);
    headers["x-forwarded-host"] = pub.host;
    headers["x-forwarded-proto"] = pub.protocol.slice(0, -1);
  }
  if (forwarded) headers["x-lablink-forwarded"] = "1";
  headers["x-lablink-peer"] = socket;
  headers["x-lablink-client-ip"] = client;
}

/**
 * The client IP decided by `prepareRequestHeaders` (rate limits, audit rows), else null: a
 * request that did not come through the web server (tests, build-time rendering).
 */
export function clientIp(headers: Headers): string | null {
  return headers.get("x-lablink-client-ip") || headers.get("x-lablink-peer") || null;
}
