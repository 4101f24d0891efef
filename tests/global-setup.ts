import { mkdirSync } from "node:fs";
import path from "node:path";
import postgres from "postgres";
import type { TestProject } from "vitest/node";
import { type EmbeddedHandle, startEmbeddedPostgres } from "../server/db/embedded";
import { runMigrations } from "../server/db/migrate";

declare module "vitest" {
  export interface ProvidedContext {
    /** A URL to a database on the test server with rights to CREATE DATABASE. */
    pgAdminUrl: string;
  }
}

export const TEMPLATE_DB = "lablink_test_template";

function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

/**
 * Real Postgres for every test: DATABASE_URL when set, otherwise an embedded server. Migrations
 * run once into a template database; each test file clones it (tests/db.ts), which is fast.
 */
export default async function setup(project: TestProject) {
  let handle: EmbeddedHandle | null = null;
  let adminUrl = process.env.DATABASE_URL;
  if (!adminUrl) {
    const dataDir = path.resolve(".data/test");
    mkdirSync(dataDir, { recursive: true });
    handle = await startEmbeddedPostgres({
      dataDir,
      port: Number(process.env.LABLINK_TEST_PG_PORT ?? 54339),
    });
    adminUrl = handle.url;
  }
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`DROP DATABASE IF EXISTS ${TEMPLATE_DB} WITH (FORCE)`);
  // Leftovers of an interrupted earlier run.
  const stale = await admin<
    { datname: string }[]
  >`SELECT datname FROM pg_database WHERE datname LIKE 'lablink_t_%'`;
  for (const { datname } of stale)
    await admin.unsafe(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`);
  await admin.unsafe(`CREATE DATABASE ${TEMPLATE_DB}`);
  await runMigrations(withDatabase(adminUrl, TEMPLATE_DB));
  await admin.end();
  project.provide("pgAdminUrl", adminUrl);

  return async () => {
    await handle?.stop();
  };
}
