import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { webBuildState } from "../../scripts/build-freshness";
import { dockerfile, repoRoot, stage } from "./dockerfile";

/**
 * The server image without a Docker engine (none runs where the tests do): its build stage
 * replayed on a copy of the build context (.dockerignore applied), and its runtime stage's
 * commands run from that copy as an unprivileged user with the application read-only, as the
 * image runs them: `npm run db:migrate`, `npm run web` with the HEALTHCHECK's own command against
 * it, and `npm run worker`, each stopped with SIGTERM. What this cannot show: the base image,
 * the apt and Terraform downloads of the runtime stage, and Docker's own COPY and USER handling.
 */

const ins = dockerfile("Dockerfile");
const build = stage(ins, "build");
const runtime = stage(ins, "last");
const adminUrl = inject("pgAdminUrl");
const isRoot = process.getuid?.() === 0;
let dir = "";
let app = "";
let runAs: string | null = null;
const children: ChildProcess[] = [];
const databases: string[] = [];

/** Paths .dockerignore leaves out of the build context (top-level names and globs, as it has). */
function ignored(rel: string, patterns: string[]): boolean {
  return patterns.some((p) => {
    const re = new RegExp(
      `^${p.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*")}(/|$)`,
    );
    return re.test(rel);
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a ? a.port : 0));
    });
  });
}

function sh(cmd: string, args: string[], cwd: string, timeout = 300_000) {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", timeout });
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

beforeAll(() => {
  // The build stage, instruction by instruction: this replay must change when the Dockerfile does.
  const runs = build.filter((i) => i.op === "RUN").map((i) => i.args);
  expect(runs).toEqual(["npm run build && npm prune --omit=dev --no-audit --no-fund"]);
  expect(
    stage(ins, "deps")
      .filter((i) => i.op === "RUN")
      .map((i) => i.args),
  ).toEqual(["npm ci --no-audit --no-fund"]);

  dir = mkdtempSync(path.join(tmpdir(), "lablink-image-"));
  chmodSync(dir, 0o755);
  app = path.join(dir, "app");
  // COPY . . — the build context: what git has (tracked or not ignored), less .dockerignore.
  const patterns = readFileSync(path.join(repoRoot, ".dockerignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  const files = sh(
    "git",
    ["ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    repoRoot,
  )
    .split("\0")
    .filter((f) => f && !ignored(f, patterns) && existsSync(path.join(repoRoot, f)));
  for (const f of files) {
    mkdirSync(path.dirname(path.join(app, f)), { recursive: true });
    cpSync(path.join(repoRoot, f), path.join(app, f));
  }
  // npm ci: the same lockfile's tree, linked rather than downloaded again (a copy where the
  // temporary folder is on another file system).
  for (const nm of ["node_modules", "agent/node_modules"]) {
    if (!existsSync(path.join(repoRoot, nm))) continue;
    const r = spawnSync("cp", ["-al", path.join(repoRoot, nm), path.join(app, nm)]);
    if (r.status !== 0) sh("cp", ["-a", path.join(repoRoot, nm), path.join(app, nm)], repoRoot);
  }
  // npm run build: `next build` is reused from the checkout when it is current (CI builds it
  // before the tests; a stale or missing one is built here first), then the server bundles are
  // built in the copy, as the build stage does.
  if (!webBuildState(repoRoot).current) sh("npx", ["next", "build"], repoRoot, 900_000);
  cpSync(path.join(repoRoot, ".next"), path.join(app, ".next"), { recursive: true });
  rmSync(path.join(app, ".next/cache"), { recursive: true, force: true });
  sh(process.execPath, ["scripts/build-server.mjs"], app);
  sh("npm", ["prune", "--omit=dev", "--no-audit", "--no-fund", "--offline"], app);

  // The runtime stage: root owns the application; the process writes only its data folder and
  // .next/cache. As root here the processes run as `nobody` (the image's `lablink`).
  mkdirSync(path.join(app, ".next/cache"), { recursive: true });
  mkdirSync(path.join(dir, "data"));
  mkdirSync(path.join(dir, "home"));
  if (isRoot) {
    const nodeOk = spawnSync("runuser", ["-u", "nobody", "--", process.execPath, "--version"]);
    if (nodeOk.status === 0) {
      runAs = "nobody";
      sh("chmod", ["-R", "go-w", app], dir);
      for (const d of [
        path.join(app, ".next/cache"),
        path.join(dir, "data"),
        path.join(dir, "home"),
      ])
        sh("chown", ["-R", "nobody", d], dir);
    }
  }
}, 1_200_000);

afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  if (dir) rmSync(dir, { recursive: true, force: true });
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  for (const name of databases) await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end();
});

/** The image's ENV, plus what compose.yaml and .env give it. */
function imageEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: Record<string, string> = {};
  for (const i of runtime.filter((x) => x.op === "ENV")) {
    for (const m of i.args.matchAll(/(\w+)=(\S+)/g)) if (m[1] && m[2]) env[m[1]] = m[2];
  }
  return {
    NODE_ENV: "production",
    PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ""}`,
    HOME: path.join(dir, "home"),
    npm_config_cache: path.join(dir, "home/.npm"),
    ...env,
    // Loopback here rather than the image's 0.0.0.0.
    HOST: "127.0.0.1",
    LABLINK_DATA_DIR: path.join(dir, "data"),
    ...extra,
  };
}

function start(command: string[], env: NodeJS.ProcessEnv) {
  const [cmd, ...args] = runAs ? ["runuser", "-u", runAs, "--", ...command] : command;
  const child = spawn(cmd as string, args, { cwd: app, env, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let out = "";
  child.stdout?.on("data", (b: Buffer) => {
    out += b.toString();
  });
  child.stderr?.on("data", (b: Buffer) => {
    out += b.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  return { child, output: () => out, exited };
}

async function until(
  what: string,
  ok: () => boolean | Promise<boolean>,
  ms: number,
  log: () => string,
) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} did not happen in ${ms} ms:\n${log().slice(-3000)}`);
}

describe("server image (Dockerfile), its stages replayed without Docker", () => {
  it("migrates, serves the health check the image declares, runs the worker, and stops on SIGTERM; as a user that cannot write the app", async () => {
    if (isRoot) expect(runAs, "runuser -u nobody could not run node").toBe("nobody");
    const name = `lablink_t_image_${randomBytes(4).toString("hex")}`;
    const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
    await admin.unsafe(`CREATE DATABASE ${name}`);
    await admin.end();
    databases.push(name);
    const u = new URL(adminUrl);
    u.pathname = `/${name}`;
    const port = await freePort();
    const env = imageEnv({
      DATABASE_URL: u.toString(),
      PORT: String(port),
      AUTH_SECRET: randomBytes(32).toString("base64url"),
      LABLINK_PUBLIC_URL: `http://127.0.0.1:${port}`,
      LABLINK_ADMIN_EMAILS: "admin@example.org",
    });
    // The image says production itself (the fallback above is only for the type).
    expect(runtime.some((i) => i.op === "ENV" && /\bNODE_ENV=production\b/.test(i.args))).toBe(
      true,
    );

    // compose.yaml's migrate service: `npm run db:migrate`, once, before web and worker.
    const migrate = start(["npm", "run", "db:migrate"], env);
    expect(await migrate.exited, migrate.output()).toBe(0);

    // The image's CMD.
    const cmd = JSON.parse(runtime.find((i) => i.op === "CMD")?.args ?? "[]") as string[];
    expect(cmd).toEqual(["npm", "run", "web"]);
    const web = start(cmd, env);
    const health = JSON.parse(
      (runtime.find((i) => i.op === "HEALTHCHECK")?.args ?? "").replace(/^.*?CMD\s+/, ""),
    ) as string[];
    const healthy = () =>
      new Promise<boolean>((resolve) => {
        const [c, ...a] = runAs ? ["runuser", "-u", runAs, "--", ...health] : health;
        const probe = spawn(c as string, a, { env, stdio: "ignore" });
        probe.once("exit", (code) => resolve(code === 0));
      });
    expect(await healthy()).toBe(false);
    await until("the image's HEALTHCHECK passing", healthy, 120_000, web.output);
    const page = await fetch(`http://127.0.0.1:${port}/signin`);
    expect(page.status).toBe(200);

    // The application folder is not writable by the process; its data folder is.
    if (runAs) {
      const write = spawnSync("runuser", ["-u", runAs, "--", "touch", path.join(app, "x")]);
      expect(write.status).not.toBe(0);
    }

    const worker = start(["npm", "run", "worker"], env);
    await until(
      "the worker starting",
      () => /worker started/.test(worker.output()),
      120_000,
      worker.output,
    );

    for (const p of [web, worker]) p.child.kill("SIGTERM");
    const codes = await Promise.race([
      Promise.all([web.exited, worker.exited]),
      new Promise<null>((r) => setTimeout(() => r(null), 15_000)),
    ]);
    expect(codes, `${web.output().slice(-2000)}\n${worker.output().slice(-2000)}`).not.toBeNull();
  }, 400_000);
});
