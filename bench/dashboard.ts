/**
 * Dashboard benchmark: the admin fleet dashboard with 10,000 VMs, on the real app.
 *
 *   npm run bench:dashboard -- [--vms 10000] [--rounds 20]
 *
 * Starts the whole app as `npm start` does (own data dir .data/bench-ui, port 3300, embedded
 * Postgres on 54369, no local fleet), seeds 10,000 VMs with holders, GPU readings and heartbeats
 * straight into its database, signs an admin in through the real form in Chromium, and measures:
 *
 *  - server: `vm.list` first page (50 rows, default sort) over HTTP with the admin's session, and
 *    the same for a filtered + searched page; baseline in the same run: `/api/health` (one
 *    trivial database round trip through the same server). Target: first page p95 < 300 ms.
 *  - browser: from navigation to /admin until the first VM rows are on screen and the filters
 *    respond (interactive), and a search keystroke until the table shows the match.
 *    Target: interactive < 2 s.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { chromium } from "@playwright/test";
import postgres from "postgres";

const root = path.resolve(import.meta.dirname, "..");
const PORT = 3300;
const PG_PORT = 54369;
const DATA_DIR = ".data/bench-ui";
const BASE = `http://127.0.0.1:${PORT}`;

const { values } = parseArgs({
  options: { vms: { type: "string" }, rounds: { type: "string" } },
});
const VMS = Number(values.vms ?? 10_000);
const ROUNDS = Number(values.rounds ?? 20);

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? Number.NaN;
};
const fmt = (n: number) => n.toFixed(1).padStart(7);

function startApp(): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/start.ts", "--fresh"], {
    cwd: root,
    env: {
      ...process.env,
      PORT: String(PORT),
      LABLINK_DATA_DIR: DATA_DIR,
      LABLINK_EMBEDDED_PG_PORT: String(PG_PORT),
      LABLINK_LOCAL_FLEET_SIZE: "0",
      LOG_LEVEL: "warn",
      DATABASE_URL: "",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    child.stdout?.on("data", (b: Buffer) => {
      const text = b.toString();
      if (text.includes("LabLink is running")) resolve(child);
    });
    child.on("exit", (code) => reject(new Error(`app exited early (code ${code})`)));
  });
}

async function seed(n: number) {
  const password = readFileSync(
    path.join(root, DATA_DIR, "postgres-password.secret"),
    "utf8",
  ).trim();
  const sql = postgres({
    host: "127.0.0.1",
    port: PG_PORT,
    user: "lablink",
    password,
    database: "lablink",
    onnotice: () => {},
  });
  const [fleet] = await sql<{ id: string }[]>`
    INSERT INTO fleets (name, driver, instance_type, gpu_model, gpu_count, region, desired_size, status)
    VALUES ('workshop-a100', 'terraform', 'p4d.24xlarge', 'NVIDIA A100', 1, 'us-west-2', ${n}, 'active')
    RETURNING id`;
  if (!fleet) throw new Error("fleet insert returned nothing");
  const holders = Math.floor(n / 5);
  await sql`
    INSERT INTO users (name, email, role)
    SELECT 'researcher ' || i, 'r' || i || '@uni.example.edu', 'researcher'
    FROM generate_series(1, ${holders}) i`;
  await sql`
    WITH u AS (SELECT id, row_number() OVER (ORDER BY email) AS rn FROM users WHERE role = 'researcher')
    INSERT INTO vms (fleet_id, name, state, holder_id, healthy, health_reasons, gpus, last_heartbeat_at, state_changed_at, agent_version, hostname)
    SELECT ${fleet.id}, 'gpu-' || lpad(i::text, 5, '0'),
      (CASE WHEN i <= ${holders} THEN 'claimed' WHEN i % 50 = 0 THEN 'failed' WHEN i % 20 = 0 THEN 'booting' ELSE 'ready' END)::vm_state,
      u.id,
      i % 37 <> 0,
      CASE WHEN i % 37 = 0 THEN '["uncorrectable ECC errors: 2"]'::jsonb ELSE '[]'::jsonb END,
      jsonb_build_array(jsonb_build_object('index', 0, 'uuid', null, 'name', 'NVIDIA A100-SXM4-40GB',
        'temperatureC', 40 + i % 30, 'utilizationPct', i % 100, 'memoryUsedMiB', i % 40000,
        'memoryTotalMiB', 40960, 'powerDrawW', 90 + i % 300, 'healthy', i % 37 <> 0, 'reasons', '[]'::jsonb)),
      now() - (i % 60) * interval '1 second', now() - i * interval '1 second', '0.1.0', 'ip-10-0-' || i
    FROM generate_series(1, ${n}) i LEFT JOIN u ON u.rn = i`;
  await sql`ANALYZE`;
  await sql.end();
}

async function main() {
  console.log(`LabLink dashboard benchmark: ${VMS} VMs, ${ROUNDS} rounds`);
  const t0 = performance.now();
  const app = await startApp();
  console.log(`  app started in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const stop = () =>
    new Promise<void>((resolve) => {
      if (app.exitCode !== null) return resolve();
      app.once("exit", () => resolve());
      app.kill("SIGTERM");
    });
  try {
    const s0 = performance.now();
    await seed(VMS);
    console.log(`  seeded ${VMS} VMs in ${((performance.now() - s0) / 1000).toFixed(1)} s`);

    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
      ],
    });
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    await page.goto(`${BASE}/signin`);
    await page.getByLabel("Your name").fill("bench-admin");
    await page.getByRole("radio", { name: "Admin" }).check();
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL(/\/admin$/);
    await page.getByTestId("vm-row").first().waitFor();

    // Server figures, over HTTP with the admin's cookie.
    const time = async (url: string) => {
      const t = performance.now();
      const res = await context.request.get(url);
      if (!res.ok()) throw new Error(`${url} answered ${res.status()}`);
      await res.body();
      return performance.now() - t;
    };
    const q = (input: unknown) =>
      `${BASE}/api/trpc/vm.list?input=${encodeURIComponent(JSON.stringify({ json: input }))}`;
    const cases: [string, string][] = [
      ["baseline /api/health", `${BASE}/api/health`],
      ["vm.list first page", q({ limit: 50, offset: 0 })],
      [
        "vm.list state+search",
        q({ states: ["claimed"], search: "researcher 19", limit: 50, offset: 0 }),
      ],
      [
        "vm.list sort heartbeat, page 100",
        q({ sort: "lastHeartbeat", order: "desc", limit: 50, offset: 4950 }),
      ],
    ];
    const results: Record<string, number[]> = {};
    for (const [name, url] of cases) {
      await time(url); // warm
      results[name] = [];
      for (let i = 0; i < ROUNDS; i++) results[name]?.push(await time(url));
    }
    console.log("\n  server (ms, over HTTP)            p50      p95      max   x baseline(p50)");
    const base = pct(results["baseline /api/health"] ?? [], 50);
    for (const [name, xs] of Object.entries(results)) {
      console.log(
        `  ${name.padEnd(32)} ${fmt(pct(xs, 50))}  ${fmt(pct(xs, 95))}  ${fmt(Math.max(...xs))}   ${(pct(xs, 50) / base).toFixed(1)}`,
      );
    }

    // Browser figures.
    const loads: number[] = [];
    const searches: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      await page.goto(`${BASE}/admin`);
      await page.getByTestId("vm-row").nth(49).waitFor();
      await page.getByLabel("Search", { exact: true }).waitFor({ state: "visible" });
      loads.push(performance.now() - t);
      const s = performance.now();
      await page.getByLabel("Search", { exact: true }).fill(`gpu-0${1000 + i}`);
      await page.getByTestId("vm-total").filter({ hasText: "of 1" }).waitFor();
      searches.push(performance.now() - s);
    }
    console.log("\n  browser (ms)                      p50      max");
    console.log(
      `  ${"navigate → 50 rows + filters".padEnd(32)} ${fmt(pct(loads, 50))}  ${fmt(Math.max(...loads))}`,
    );
    console.log(
      `  ${"search keystroke → 1 match".padEnd(32)} ${fmt(pct(searches, 50))}  ${fmt(Math.max(...searches))}`,
    );
    const first = pct(results["vm.list first page"] ?? [], 95);
    const interactive = pct(loads, 50);
    console.log(
      `\n  first page p95 < 300 ms : ${first < 300 ? "PASS" : "FAIL"} (${first.toFixed(1)} ms)`,
    );
    console.log(
      `  interactive < 2 s       : ${interactive < 2000 ? "PASS" : "FAIL"} (${interactive.toFixed(0)} ms median)`,
    );
    await browser.close();
  } finally {
    await stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
