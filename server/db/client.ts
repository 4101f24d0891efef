import { drizzle, type PostgresJsDatabase } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import { env } from "../env";
import * as schema from "./schema";

export type Db = PostgresJsDatabase<typeof schema>;
export type Tx = Parameters<Parameters<Db["transaction"]>[0]>[0];
/** Domain functions take either, so callers can compose several in one transaction. */
export type DbOrTx = Db | Tx;

export type Database = { db: Db; sql: postgres.Sql };

export function createDatabase(url: string, options: { max?: number } = {}): Database {
  const sql = postgres(url, {
    max: options.max ?? 10,
    onnotice: () => {},
  });
  return { db: drizzle(sql, { schema }), sql };
}

/**
 * The postgres.js client under a Drizzle database or transaction, for statements sent straight to
 * it as named prepared statements (Drizzle sends raw SQL unprepared).
 */
export function pgClient(db: DbOrTx): postgres.Sql {
  const client = (db as unknown as { session?: { client?: postgres.Sql } }).session?.client;
  if (!client || typeof client.unsafe !== "function") {
    throw new Error("this needs a postgres.js-backed Drizzle database");
  }
  return client;
}

const globalForDb = globalThis as unknown as { lablinkDb?: Database };

/** The process-wide pool, created on first use from DATABASE_URL. */
export function getDatabase(): Database {
  if (!globalForDb.lablinkDb) {
    const url = env().DATABASE_URL;
    if (!url) {
      throw new Error(
        "DATABASE_URL is not set. Start LabLink with `npm start` (embedded Postgres) or set DATABASE_URL.",
      );
    }
    globalForDb.lablinkDb = createDatabase(url, { max: 10 });
  }
  return globalForDb.lablinkDb;
}

export function getDb(): Db {
  return getDatabase().db;
}

export { schema };
