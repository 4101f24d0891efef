/**
 * The Content-Security-Policy for pages. Scripts run only with this response's nonce (Next puts it
 * on its own scripts when the request carries the policy), so no 'unsafe-inline'; 'unsafe-eval'
 * only in `next dev`, where React needs it. Nothing may frame LabLink, and forms post only to it.
 */
export function contentSecurityPolicy(o: { nonce: string; dev: boolean; https: boolean }): string {
  return [
    "default-src 'self'",
    `script-src 'self' 'nonce-${o.nonce}' 'strict-dynamic'${o.dev ? " 'unsafe-eval'" : ""}`,
    `style-src 'self' 'nonce-${o.nonce}'`,
    "img-src 'self' blob: data:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    ...(o.https ? ["upgrade-insecure-requests"] : []),
  ].join("; ");
}

/** Sent only over HTTPS (browsers ignore it over HTTP, and localhost must stay reachable). */
export const HSTS = "max-age=63072000; includeSubDomains";

/** Sent with every response (next.config.ts for what Next serves, the agent gateway for its own). */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "X-Frame-Options": "DENY",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "same-origin",
  "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
};

/** The JSON API loads nothing and may not be framed. */
export const API_CSP = "default-src 'none'; frame-ancestors 'none'";

/** Headers for a JSON API answer; HSTS when the request came in over HTTPS (behind a proxy). */
export function apiSecurityHeaders(https: boolean): Record<string, string> {
  return {
    ...SECURITY_HEADERS,
    "Content-Security-Policy": API_CSP,
    "Cache-Control": "no-store",
    ...(https ? { "Strict-Transport-Security": HSTS } : {}),
  };
}
