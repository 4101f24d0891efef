import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../db";

/**
 * What `npm run build` makes for production besides the Next app: the worker, the migrations
 * command and the CLI as plain JavaScript (scripts/build-server.mjs), started with `node` and no
 * tsx. Built here into a folder of its own (not dist/, which a developer's processes may be using),
 * one level deeper than dist/, which also proves the bundles find the repository (drizzle/,
 * terraform/, the Next app) from where they are written.
 */

const root = path.resolve(import.meta.dirname, "../..");
// Inside the checkout (git-ignored .data/), as dist/ is: the bundles import node_modules from it.
mkdirSync(path.join(root, ".data"), { recursive: true });
const out = mkdtempSync(path.join(root, ".data", "built-"));
const adminUrl = inject("pgAdminUrl");
const createdDbs: string[] = [];
const children: ChildProcess[] = [];

beforeAll(() => {
  const r = spawnSync(process.execPath, ["scripts/build-server.mjs", out], {
    cwd: root,
    encoding: "utf8",
    timeout: 60_000,
  });
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
}, 60_000);

afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  rmSync(out, { recursive: true, force: true });
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  for (const name of createdDbs) await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end();
});

/** The environment of a production process: no tsx loader, no test settings leaking in. */
function prodEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const { DATABASE_URL: _d, NODE_OPTIONS: _n, ...rest } = process.env;
  return { ...rest, NODE_ENV: "production", LOG_LEVEL: "info", ...extra };
}

describe("npm run build: the server bundles", () => {
  it("writes one ES module per process, with this repository's TypeScript compiled in", () => {
    for (const name of ["web", "worker", "migrate", "lablink"]) {
      const js = readFileSync(path.join(out, `${name}.mjs`), "utf8");
      expect(js).not.toMatch(/from ["']tsx/);
      expect(js).not.toMatch(/from ["'][^"']*\.ts["']/);
      // Sources' own folders, not the bundle's, for import.meta.dirname.
      expect(js).not.toMatch(/\bimport\.meta\.dirname\b(?!, )/);
    }
  });

  it("the built migrations command migrates a new database with node alone", async () => {
    const name = `lablink_t_built_${randomBytes(4).toString("hex")}`;
    const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
    await admin.unsafe(`CREATE DATABASE ${name}`);
    await admin.end();
    createdDbs.push(name);
    const u = new URL(adminUrl);
    u.pathname = `/${name}`;
    const r = spawnSync(process.execPath, [path.join(out, "migrate.mjs")], {
      cwd: tmpdir(),
      env: prodEnv({ DATABASE_URL: u.toString() }),
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/is up to date/);
    const journal = JSON.parse(readFileSync(path.join(root, "drizzle/meta/_journal.json"), "utf8"));
    const sql = postgres(u.toString(), { max: 1, onnotice: () => {} });
    const [row] = await sql<
      { n: number }[]
    >`SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations`;
    await sql.end();
    expect(row?.n).toBe(journal.entries.length);
  });

  it("the built worker starts against a migrated database and stops on SIGTERM", async () => {
    const db: TestDatabase = await createTestDatabase();
    try {
      const data = mkdtempSync(path.join(tmpdir(), "lablink-built-data-"));
      const child = spawn(process.execPath, [path.join(out, "worker.mjs")], {
        cwd: tmpdir(),
        env: prodEnv({ DATABASE_URL: db.url, LABLINK_DATA_DIR: data, PORT: "1" }),
        stdio: ["ignore", "pipe", "pipe"],
      });
      children.push(child);
      let output = "";
      child.stdout?.on("data", (d) => {
        output += d;
      });
      child.stderr?.on("data", (d) => {
        output += d;
      });
      const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
      const deadline = Date.now() + 45_000;
      while (!output.includes("worker started") && child.exitCode === null && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      expect(output).toContain("worker started");
      child.kill("SIGTERM");
      const code = await exited;
      expect(output).toContain("worker stopping");
      expect(code, output).toBe(0);
      rmSync(data, { recursive: true, force: true });
    } finally {
      await db.drop();
    }
  }, 60_000);

  it("the built CLI answers --help and rejects an unknown command as a usage error", () => {
    const help = spawnSync(process.execPath, [path.join(out, "lablink.mjs"), "--help"], {
      env: prodEnv({}),
      encoding: "utf8",
    });
    expect(help.status).toBe(0);
    for (const cmd of ["fleet", "vm", "operation", "user", "config"])
      expect(help.stdout).toMatch(new RegExp(`^\\s+${cmd}\\b`, "m"));
    // config check loads the server's settings module, which the bundle carries too.
    const check = spawnSync(process.execPath, [path.join(out, "lablink.mjs"), "config", "check"], {
      env: prodEnv({ DATABASE_URL: "mysql://somewhere/lablink" }),
      encoding: "utf8",
    });
    expect(check.stderr).toMatch(/DATABASE_URL: must be a postgres:\/\//);
    expect(check.status).toBe(1);
    const wrong = spawnSync(process.execPath, [path.join(out, "lablink.mjs"), "no-such-command"], {
      env: prodEnv({}),
      encoding: "utf8",
    });
    expect(wrong.status).toBe(2);
  });

  it("npm run web | worker | db:migrate say to build first when dist/ is missing", () => {
    // A copy of the launcher in a checkout without dist/.
    const checkout = mkdtempSync(path.join(tmpdir(), "lablink-nodist-"));
    try {
      mkdirSync(path.join(checkout, "scripts"));
      cpSync(
        path.join(root, "scripts/run-built.mjs"),
        path.join(checkout, "scripts/run-built.mjs"),
      );
      for (const name of ["web", "worker", "migrate"]) {
        const r = spawnSync(process.execPath, ["scripts/run-built.mjs", name], {
          cwd: checkout,
          encoding: "utf8",
        });
        expect(r.status).toBe(1);
        expect(r.stderr).toContain(`dist/${name}.mjs is missing: run \`npm run build\` first`);
      }
    } finally {
      rmSync(checkout, { recursive: true, force: true });
    }
    const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));
    expect(pkg.scripts.worker).toBe("node scripts/run-built.mjs worker");
    expect(pkg.scripts["db:migrate"]).toBe("node scripts/run-built.mjs migrate");
    expect(pkg.scripts.build).toMatch(/^next build && node scripts\/build-server\.mjs$/);
  });
});
