/**
 * `npm run db:migrate`: applies the committed migrations (drizzle/) to DATABASE_URL and exits.
 * Run it once per release, before starting the new web and worker processes; it is safe to run
 * again (applied migrations are recorded in the database and skipped).
 */
import { runMigrations } from "../server/db/migrate";
import { EnvError, parseEnv } from "../server/env";

async function main(): Promise<number> {
  let url: string | undefined;
  try {
    url = parseEnv(process.env).DATABASE_URL;
  } catch (e) {
    if (!(e instanceof EnvError)) throw e;
    process.stderr.write(`${e.message}\n`);
    return 1;
  }
  if (!url) {
    process.stderr.write(
      "db:migrate needs DATABASE_URL (postgres://user:password@host:5432/lablink): the database to migrate.\n" +
        "`npm start` migrates its own embedded database by itself.\n",
    );
    return 1;
  }
  const target = new URL(url);
  const where = `${target.hostname}:${target.port || 5432}${target.pathname}`;
  process.stdout.write(`migrating ${where}…\n`);
  const started = Date.now();
  await runMigrations(url);
  process.stdout.write(`database at ${where} is up to date (${Date.now() - started} ms).\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    // The driver's message names what failed (connection refused, a failing statement); never
    // the URL, which carries the password.
    const cause =
      err instanceof Error && err.cause instanceof Error ? ` (${err.cause.message})` : "";
    const msg = err instanceof Error ? err.message.split("\n")[0] : String(err);
    process.stderr.write(`db:migrate failed: ${msg}${cause}\n`);
    process.exit(1);
  },
);
