import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { drizzle } from "drizzle-orm/postgres-js";
import { migrate } from "drizzle-orm/postgres-js/migrator";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { MIGRATIONS_DIR } from "../../server/db/migrate";

/**
 * `npm run db:migrate`, the command operators run on every release, as a real process against
 * real databases: a new one, one at the previous release's schema with data in it, and none.
 */

/**
 * Migrations in the last release (0000–0014). At each release, set this to the number of files in
 * drizzle/ that the release shipped, so this test keeps proving the upgrade from it.
 */
const PREVIOUS_RELEASE_MIGRATIONS = 15;

const root = path.resolve(import.meta.dirname, "../..");
const journal = JSON.parse(
  readFileSync(path.join(MIGRATIONS_DIR, "meta/_journal.json"), "utf8"),
) as {
  entries: { tag: string }[];
};
const adminUrl = inject("pgAdminUrl");
const created: string[] = [];

async function newDatabase(): Promise<string> {
  const name = `lablink_t_migrate_${randomBytes(4).toString("hex")}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  await admin.end();
  created.push(name);
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

// `npm run db:migrate` runs the built dist/migrate.mjs: build it from the sources under test (the
// files are replaced whole, so a process already running from dist/ is not disturbed).
beforeAll(() => {
  const r = spawnSync("npm", ["run", "--silent", "build:server"], { cwd: root, encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
}, 60_000);

afterAll(async () => {
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  for (const name of created) await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end();
});

function dbMigrate(env: Record<string, string | undefined>) {
  const { DATABASE_URL: _omit, ...rest } = process.env;
  const r = spawnSync("npm", ["run", "--silent", "db:migrate"], {
    cwd: root,
    env: { ...rest, ...env },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

async function appliedCount(url: string): Promise<number> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<
      { n: number }[]
    >`SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations`;
    return row?.n ?? 0;
  } finally {
    await sql.end();
  }
}

describe("npm run db:migrate", () => {
  it("refuses clearly without DATABASE_URL, and names a malformed one", () => {
    const none = dbMigrate({});
    expect(none.code).toBe(1);
    expect(none.err).toMatch(/db:migrate needs DATABASE_URL/);
    const bad = dbMigrate({ DATABASE_URL: "mysql://somewhere/lablink" });
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/DATABASE_URL: must be a postgres:\/\//);
  });

  it("migrates a new database, and a second run changes nothing", async () => {
    const url = await newDatabase();
    const first = dbMigrate({ DATABASE_URL: url });
    expect(first.err).toBe("");
    expect(first.code).toBe(0);
    expect(first.out).toMatch(/is up to date/);
    expect(first.out).not.toContain(new URL(url).password || "\u0000");
    expect(await appliedCount(url)).toBe(journal.entries.length);
    expect(dbMigrate({ DATABASE_URL: url }).code).toBe(0);
    expect(await appliedCount(url)).toBe(journal.entries.length);
  });

  it("upgrades a database at the previous release's schema and keeps its data", async () => {
    const url = await newDatabase();
    // The previous release's migrations only: the same files, with the journal cut there.
    const dir = mkdtempSync(path.join(tmpdir(), "lablink-prev-"));
    try {
      cpSync(MIGRATIONS_DIR, dir, { recursive: true });
      const prev = { ...journal, entries: journal.entries.slice(0, PREVIOUS_RELEASE_MIGRATIONS) };
      writeFileSync(path.join(dir, "meta/_journal.json"), JSON.stringify(prev));
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      await migrate(drizzle(sql), { migrationsFolder: dir });
      await sql`INSERT INTO users (id, email, name, role) VALUES (gen_random_uuid(), 'kept@example.edu', 'Kept', 'admin')`;
      await sql.end();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(await appliedCount(url)).toBe(PREVIOUS_RELEASE_MIGRATIONS);

    const r = dbMigrate({ DATABASE_URL: url });
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(await appliedCount(url)).toBe(journal.entries.length);
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    const kept = await sql`SELECT role FROM users WHERE email = 'kept@example.edu'`;
    await sql.end();
    expect(kept).toEqual([{ role: "admin" }]);
  });

  it("fails with the server's reason, without printing the password, when the database is unreachable", () => {
    const r = dbMigrate({ DATABASE_URL: "postgres://lablink:s3cret-pw@127.0.0.1:1/lablink" });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/db:migrate failed: .*(ECONNREFUSED|connect)/);
    expect(`${r.out}${r.err}`).not.toContain("s3cret-pw");
  });
});
