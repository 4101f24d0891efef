import { type SpawnSyncOptions, spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyAgentToken } from "../../server/auth/agent-tokens";
import { createApiToken, verifyApiToken } from "../../server/auth/api-tokens";
import { createDatabase } from "../../server/db/client";
import { runMigrations } from "../../server/db/migrate";
import { claimVm, heldVm } from "../../server/domain/allocation";
import { makeAgent, makeFleet, makeUser, makeVms } from "../fixtures";

/**
 * docs/deploy-aws.md §9, run for real: `pg_dump -Fc` of a live LabLink database, damage after the
 * dump, `pg_restore --clean --if-exists` over it, the migrate command, and the app reading the
 * restored data (a researcher's hold, an agent's token, an admin's API token); and the same dump
 * restored on "a new host" (an empty database). pg_dump must match the server's major version, so
 * this runs on Debian's PostgreSQL server and client tools (one version, e.g. 15) rather than on
 * the embedded Postgres 18, for which no pg_dump is packaged here. The guide's compose file runs
 * the official postgres image, whose pg_dump matches its server in the same way.
 */

const INSTALL = "apt-get install -y postgresql";

/** The newest /usr/lib/postgresql/<major>/bin holding the server and the dump tools. */
function postgresTools(): string | null {
  const base = process.env.LABLINK_PG_TOOLS_DIR;
  if (base) return base;
  if (!existsSync("/usr/lib/postgresql")) return null;
  const majors = readdirSync("/usr/lib/postgresql")
    .filter((d) => /^\d+$/.test(d))
    .sort((a, b) => Number(b) - Number(a));
  for (const major of majors) {
    const bin = `/usr/lib/postgresql/${major}/bin`;
    if (["initdb", "pg_ctl", "pg_dump", "pg_restore"].every((t) => existsSync(path.join(bin, t))))
      return bin;
  }
  return null;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      s.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

const tools = postgresTools();
const isRoot = process.getuid?.() === 0;
let dir = "";
let port = 0;

/** Runs a Postgres tool, as the `postgres` user when this test runs as root (initdb refuses root). */
function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}) {
  const r = isRoot
    ? spawnSync("runuser", ["-u", "postgres", "--", cmd, ...args], { encoding: "utf8", ...opts })
    : spawnSync(cmd, args, { encoding: "utf8", ...opts });
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(" ")} failed (exit ${r.status}): ${r.stderr} ${r.stdout}`);
  return r;
}

const tool = (name: string) => path.join(tools ?? "", name);
const url = (db: string) => `postgres://lablink@127.0.0.1:${port}/${db}`;
const conn = ["-h", "127.0.0.1", "-p", "", "-U", "lablink"];
const connArgs = () => conn.map((a) => (a === "" ? String(port) : a));

beforeAll(async () => {
  if (!tools)
    throw new Error(
      `No PostgreSQL server and client tools found under /usr/lib/postgresql. Install them, then run the tests again:\n  ${INSTALL}\n(or set LABLINK_PG_TOOLS_DIR to a folder with initdb, pg_ctl, pg_dump and pg_restore of one version)`,
    );
  dir = mkdtempSync(path.join(tmpdir(), "lablink-backup-"));
  chmodSync(dir, 0o755);
  if (isRoot) {
    const ids = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
    const gids = spawnSync("id", ["-g", "postgres"], { encoding: "utf8" });
    chownSync(dir, Number(ids.stdout.trim()), Number(gids.stdout.trim()));
  }
  port = await freePort();
  run(tool("initdb"), ["-D", `${dir}/data`, "-U", "lablink", "--auth=trust", "-E", "UTF8"]);
  run(tool("pg_ctl"), [
    "-D",
    `${dir}/data`,
    "-l",
    `${dir}/server.log`,
    "-w",
    "-o",
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1`,
    "start",
  ]);
  const admin = postgres(url("postgres"), { max: 1, onnotice: () => {} });
  await admin.unsafe("CREATE DATABASE lablink");
  await admin.end();
}, 120_000);

afterAll(() => {
  if (dir && existsSync(`${dir}/data/postmaster.pid`))
    run(tool("pg_ctl"), ["-D", `${dir}/data`, "-m", "immediate", "stop"]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Every row of every LabLink table (and the job queue's), as one digest per table. */
async function contents(dbUrl: string): Promise<Record<string, string>> {
  const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
  try {
    const tables = await sql<{ name: string }[]>`
      SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables
      WHERE schemaname IN ('public', 'drizzle', 'pgboss') ORDER BY 1`;
    const out: Record<string, string> = {};
    for (const { name } of tables) {
      const [row] = await sql.unsafe<{ n: number; digest: string | null }[]>(
        `SELECT count(*)::int AS n, md5(string_agg(t::text, E'\\n' ORDER BY t::text)) AS digest FROM ${name} t`,
      );
      out[name] = `${row?.n}:${row?.digest}`;
    }
    return out;
  } finally {
    await sql.end();
  }
}

describe("backups and restore (docs/deploy-aws.md §9)", () => {
  it("pg_dump -Fc, then pg_restore --clean --if-exists and migrate, brings back every row, and the app reads it", async () => {
    await runMigrations(url("lablink"));
    const live = createDatabase(url("lablink"), { max: 2 });
    const { db } = live;
    const researcher = await makeUser(db, "researcher");
    const admin = await makeUser(db, "admin");
    const fleet = await makeFleet(db, { desiredSize: 2 });
    const [vmA, vmB] = await makeVms(db, fleet, 2, "ready");
    if (!vmA || !vmB) throw new Error("no VMs");
    const agentToken = await makeAgent(db, vmA);
    const apiToken = await createApiToken(db, {
      userId: admin.id,
      name: "backup test",
      scope: "admin",
      expiresInDays: 30,
      actor: { kind: "user", id: admin.id },
    });
    const claim = await claimVm(db, {
      userId: researcher.id,
      actor: { kind: "user", id: researcher.id },
    });
    await live.sql.end();
    const before = await contents(url("lablink"));
    expect(before["public.vms"]).toMatch(/^2:/);

    // The guide's backup command, pointed at this server.
    const dump = path.join(dir, "lablink.dump");
    run("sh", ["-c", `"$0" "$@" > ${dump}`, tool("pg_dump"), ...connArgs(), "-Fc", "lablink"], {});

    // What a restore is for: rows lost or changed after the backup.
    const after = postgres(url("lablink"), { max: 1, onnotice: () => {} });
    await after`UPDATE vms SET holder_id = NULL, state = 'failed'`;
    await after`DELETE FROM api_tokens`;
    await after`DELETE FROM audit_events`;
    await after.end();
    expect(await contents(url("lablink"))).not.toEqual(before);

    // The guide's restore: pg_restore over the database, then the migrate command.
    run("sh", [
      "-c",
      `"$0" "$@" < ${dump}`,
      tool("pg_restore"),
      ...connArgs(),
      "-d",
      "lablink",
      "--clean",
      "--if-exists",
    ]);
    await runMigrations(url("lablink"));
    expect(await contents(url("lablink"))).toEqual(before);

    // The app works on the restored data.
    const restored = createDatabase(url("lablink"), { max: 2 });
    try {
      expect((await heldVm(restored.db, researcher.id))?.id).toBe(claim.vm.id);
      expect((await verifyAgentToken(restored.db, agentToken))?.vmId).toBe(vmA.id);
      const api = await verifyApiToken(restored.db, apiToken.token);
      expect(api.ok).toBe(true);
      const second = await makeUser(restored.db, "researcher");
      const next = await claimVm(restored.db, {
        userId: second.id,
        actor: { kind: "user", id: second.id },
      });
      expect(next.vm.id).not.toBe(claim.vm.id);
    } finally {
      await restored.sql.end();
    }

    // A new host: the same dump into an empty database.
    const admin2 = postgres(url("postgres"), { max: 1, onnotice: () => {} });
    await admin2.unsafe("CREATE DATABASE lablink_new_host");
    await admin2.end();
    run("sh", [
      "-c",
      `"$0" "$@" < ${dump}`,
      tool("pg_restore"),
      ...connArgs(),
      "-d",
      "lablink_new_host",
    ]);
    await runMigrations(url("lablink_new_host"));
    expect(await contents(url("lablink_new_host"))).toEqual(before);
  }, 120_000);
});
