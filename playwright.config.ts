import { existsSync } from "node:fs";
import { defineConfig } from "@playwright/test";

// Overridable so that several checkouts can run their browser tests side by side.
const PORT = Number(process.env.LABLINK_E2E_PORT ?? 3100);
const PG_PORT = process.env.LABLINK_E2E_PG_PORT ?? "54359";
const baseURL = `http://127.0.0.1:${PORT}`;
// e2e/oidc-provider.ts runs a real OpenID provider here during e2e/oidc.spec.ts.
const OIDC_PORT = Number(process.env.LABLINK_E2E_OIDC_PORT ?? PORT + 1);
/** A real SMTP server listens here during e2e/email-link.spec.ts; sign-in links are mailed to it. */
export const SMTP_PORT = Number(process.env.LABLINK_E2E_SMTP_PORT ?? PORT + 2);
/** The scrape token the e2e server is started with (e2e/metrics.spec.ts sends it). */
export const METRICS_TOKEN = "lablink-e2e-metrics-token";
const ci = !!process.env.CI;
// No browser download is possible on these machines: Debian's chromium (apt-get install chromium).
// Where neither is present, Playwright's own (`npx playwright install chromium`) is used.
const debianChromium = "/usr/bin/chromium";
const executablePath =
  process.env.CHROMIUM_PATH ?? (existsSync(debianChromium) ? debianChromium : undefined);

/**
 * Browser tests against the whole app as `npm start` runs it: embedded Postgres, the web server,
 * the worker and the local fleet's real agent processes. Its own port, data dir and Postgres port,
 * so it runs beside a developer's `npm start` (3000 / .data / 54329) without touching it.
 */
export default defineConfig({
  testDir: "e2e",
  outputDir: "test-results",
  // The tests share one fleet of four VMs: running them one at a time keeps capacity predictable,
  // and two cores cannot run the app and several browsers at once anyway.
  workers: 1,
  fullyParallel: false,
  retries: ci ? 1 : 0,
  forbidOnly: ci,
  timeout: 90_000,
  expect: { timeout: 15_000 },
  reporter: [["list"], ["html", { outputFolder: "playwright-report", open: "never" }]],
  use: {
    baseURL,
    screenshot: "only-on-failure",
    trace: ci ? "retain-on-failure" : "off",
    launchOptions: {
      executablePath,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--disable-component-update",
        "--no-first-run",
      ],
    },
  },
  projects: [
    // Runs first so that "within 30 s of the server being up" means what it says, and so that a
    // fleet that never comes up fails once, clearly, instead of as every test's timeout.
    { name: "fleet", testMatch: /fleet\.spec\.ts/ },
    { name: "chromium", testIgnore: /fleet\.spec\.ts/, dependencies: ["fleet"] },
  ],
  webServer: {
    command: "node --import tsx scripts/start.ts --fresh",
    url: `${baseURL}/api/health`,
    env: {
      PORT: String(PORT),
      LABLINK_DATA_DIR: ".data/e2e",
      LABLINK_EMBEDDED_PG_PORT: PG_PORT,
      LABLINK_LOCAL_FLEET_SIZE: "4",
      // Fast heartbeats so releases and registrations show up within a test's patience.
      LABLINK_HEARTBEAT_INTERVAL_S: "2",
      LABLINK_AGENT_STALE_S: "30",
      // GPU history charts (e2e/gpu-charts.spec.ts) fill within seconds, not minutes.
      LABLINK_GPU_SAMPLE_INTERVAL_S: "2",
      // The app's and agents' info logs would bury the test report; warnings and errors still show.
      LOG_LEVEL: process.env.LOG_LEVEL ?? "warn",
      // Sign-in with a real OpenID provider (e2e/oidc.spec.ts); development sign-in is exempt
      // from the allow-list, so the other tests are unaffected.
      LABLINK_OIDC_ISSUER: `http://127.0.0.1:${OIDC_PORT}`,
      LABLINK_OIDC_CLIENT_ID: "lablink-e2e",
      LABLINK_OIDC_CLIENT_SECRET: "lablink-e2e-client-secret",
      LABLINK_OIDC_NAME: "Example University",
      LABLINK_ALLOWED_EMAILS: "example.edu",
      // Email sign-in links (e2e/email-link.spec.ts): built from the public URL alone.
      LABLINK_PUBLIC_URL: baseURL,
      LABLINK_SMTP_URL: `smtp://127.0.0.1:${SMTP_PORT}`,
      LABLINK_EMAIL_FROM: "LabLink <lablink@example.edu>",
      // Prometheus metrics on (e2e/metrics.spec.ts).
      LABLINK_METRICS_TOKEN: METRICS_TOKEN,
    },
    // Includes `next build` when sources changed since the last build: measured ~140 s from a
    // cold start on two busy cores (compile ~35 s, type check ~65 s), so 180 s was too tight.
    timeout: 300_000,
    reuseExistingServer: false,
    stdout: "pipe",
    stderr: "pipe",
    gracefulShutdown: { signal: "SIGTERM", timeout: 15_000 },
  },
});
