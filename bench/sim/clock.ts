import postgres from "postgres";

/**
 * A virtual clock for the policy SQL, in the sim's own database only: production code and
 * migrations are unchanged.
 *
 * Every statement in server/domain reads the time through an unqualified `now()`. Postgres looks
 * `pg_catalog` up first only when it is not named in `search_path`; named after another schema, it
 * comes after it. So the sim database gets a schema `sim` with its own `now()` (the time in
 * `sim.clock`, which the sim moves forward each tick) and `search_path = sim, pg_catalog, public`:
 * every `now()` in the domain's SQL (claims, hold limits, idle release, heartbeats, transitions,
 * schedules) then reads virtual time. Column defaults are bound to `pg_catalog.now()` when the
 * table is created, so those are pointed at `sim.now()` as well. A table rather than a session
 * setting, so every connection of the pool sees the same time.
 */
export async function installVirtualClock(url: string, startsAt: Date): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [{ db }] = (await sql`SELECT current_database() AS db`) as unknown as [{ db: string }];
    await sql.unsafe(`
      CREATE SCHEMA IF NOT EXISTS sim;
      CREATE TABLE IF NOT EXISTS sim.clock (
        id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
        at timestamptz NOT NULL
      );
      CREATE OR REPLACE FUNCTION sim.now() RETURNS timestamptz LANGUAGE sql STABLE AS
        $$ SELECT coalesce((SELECT at FROM sim.clock), pg_catalog.now()) $$;
      ALTER DATABASE "${db}" SET search_path = sim, pg_catalog, public;
    `);
    await sql`INSERT INTO sim.clock (id, at) VALUES (1, ${startsAt.toISOString()}::timestamptz) ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at`;
    const defaults = (await sql`
      SELECT table_name, column_name FROM information_schema.columns
      WHERE table_schema = 'public' AND column_default = 'now()'`) as unknown as {
      table_name: string;
      column_name: string;
    }[];
    for (const d of defaults)
      await sql.unsafe(
        `ALTER TABLE public."${d.table_name}" ALTER COLUMN "${d.column_name}" SET DEFAULT sim.now()`,
      );
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Moves the virtual clock (any connection to the sim database). */
export async function setClock(sql: postgres.Sql, at: Date): Promise<void> {
  await sql`UPDATE sim.clock SET at = ${at.toISOString()}::timestamptz WHERE id = 1`;
}

/** What `now()` says on this connection: the virtual time once the clock is installed. */
export async function dbNow(sql: postgres.Sql): Promise<Date> {
  const [row] = (await sql`SELECT now() AS at`) as unknown as [{ at: Date }];
  return row.at;
}
