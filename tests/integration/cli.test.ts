import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApiToken, revokeApiToken } from "../../server/auth/api-tokens";
import { LocalFleetDriver } from "../../server/cloud/local/driver";
import { type Fleet, users } from "../../server/db/schema";
import { claimVm } from "../../server/domain/allocation";
import { fleetLedger } from "../../server/domain/convergence";
import { executeOperation } from "../../server/jobs/operations";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { startFetchApiServer } from "../http";

/**
 * The `lablink` CLI as a user runs it: a child process (`node cli/bin.mjs`, and once through
 * `npx lablink`) talking HTTP to a real server (the same fetch handler the Next route uses), with
 * a personal API token.
 */
const ROOT = path.resolve(import.meta.dirname, "../..");

let t: TestDatabase;
let server: Awaited<ReturnType<typeof startFetchApiServer>>;
let admin: Awaited<ReturnType<typeof makeUser>>;
let researcher: Awaited<ReturnType<typeof makeUser>>;
let byo: Fleet;
let gpuFleet: Fleet;
let local: LocalFleetDriver;
const tokens = { admin: "", read: "", revoked: "" };

type Run = { code: number; stdout: string; stderr: string };

/** Runs the CLI with only the environment given (plus PATH and HOME). */
function lablink(
  args: string[],
  options: { token?: string; env?: Record<string, string>; npx?: boolean } = {},
): Promise<Run> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? "",
    LABLINK_URL: server.url,
    LABLINK_POLL_MS: "100",
    ...(options.token ? { LABLINK_TOKEN: options.token } : {}),
    ...options.env,
  };
  const [cmd, argv] = options.npx
    ? ["npx", ["--no-install", "lablink", ...args]]
    : [process.execPath, [path.join(ROOT, "cli/bin.mjs"), ...args]];
  return new Promise((resolve) => {
    execFile(
      cmd,
      argv,
      { cwd: ROOT, env: env as NodeJS.ProcessEnv, timeout: 30_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

beforeAll(async () => {
  t = await createTestDatabase();
  server = await startFetchApiServer(
    {
      db: t.db,
      events: null,
      settings: { heartbeatIntervalS: 15 },
      // No session here: every call must authenticate with its API token.
      getSession: async () => null,
    },
    { gateway: true },
  );
  admin = await makeUser(t.db, "admin");
  researcher = await makeUser(t.db, "researcher");
  byo = await makeFleet(t.db, { driver: "byo" });
  gpuFleet = await makeFleet(t.db);
  const [vm] = await makeVms(t.db, gpuFleet, 2, "ready");
  if (!vm) throw new Error("vms");
  await claimVm(t.db, {
    userId: researcher.id,
    role: "researcher",
    fleetId: gpuFleet.id,
    actor: { kind: "user", id: researcher.id, ip: null },
  });
  const actor = { kind: "user" as const, id: admin.id, ip: null };
  const make = (scope: "read" | "admin") =>
    createApiToken(t.db, {
      userId: admin.id,
      name: `cli ${scope}`,
      scope,
      expiresInDays: 1,
      actor,
    });
  tokens.admin = (await make("admin")).token;
  tokens.read = (await make("read")).token;
  const revoked = await make("admin");
  await revokeApiToken(t.db, { userId: admin.id, id: revoked.id, actor });
  tokens.revoked = revoked.token;
  local = new LocalFleetDriver({
    ledger: fleetLedger(t.db),
    serverUrl: server.url,
    rootDir: ROOT,
    stateDir: mkdtempSync(path.join(os.tmpdir(), "lablink-cli-")),
    heartbeatIntervalS: 15,
    log: logger,
  });
});

afterAll(async () => {
  await local?.close();
  await server?.close();
  await t?.drop();
});

describe("the lablink CLI", () => {
  it("lists fleets as JSON, and VMs as a table", async () => {
    const [fleets, vmTable] = await Promise.all([
      lablink(["fleet", "list", "--json"], { token: tokens.admin }),
      lablink(["vm", "list", "--fleet", gpuFleet.name], { token: tokens.read }),
    ]);
    expect(fleets.code, fleets.stderr).toBe(0);
    const parsed = JSON.parse(fleets.stdout) as {
      name: string;
      vmCounts: Record<string, number>;
    }[];
    expect(parsed.map((f) => f.name).sort()).toEqual([byo.name, gpuFleet.name].sort());
    expect(parsed.find((f) => f.name === gpuFleet.name)?.vmCounts).toEqual({
      ready: 1,
      claimed: 1,
    });
    expect(vmTable.code, vmTable.stderr).toBe(0);
    const lines = vmTable.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^NAME\s+FLEET\s+STATE\s+HEALTHY\s+HOLDER/);
    expect(lines).toHaveLength(3);
    expect(vmTable.stdout).toContain(researcher.email ?? "");
  });

  it("creates a local fleet, follows its operation's log to the end, then scales it", async () => {
    const created = await lablink(
      ["fleet", "create", "cli-local", "--driver", "local", "--instance-type", "local.sim"].concat([
        "--size",
        "0",
        "--json",
      ]),
      { token: tokens.admin },
    );
    expect(created.code, created.stderr).toBe(0);
    const { fleetId, operation } = JSON.parse(created.stdout) as {
      fleetId: string;
      operation: { id: string; kind: string; status: string };
    };
    expect(operation).toMatchObject({ kind: "fleet.create", status: "queued" });

    // The CLI follows while the operation is still queued; the worker's part runs meanwhile.
    const following = lablink(["operation", "logs", operation.id, "--follow"], {
      token: tokens.read,
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(
      await executeOperation({ db: t.db, drivers: { local }, log: logger }, operation.id),
    ).toEqual({ status: "succeeded" });
    const followed = await following;
    expect(followed.code, followed.stderr).toBe(0);
    expect(followed.stdout.trim().split("\n").at(-1)).toBe("operation succeeded");
    expect(followed.stdout.split("\n").length).toBeGreaterThan(2);

    const scaled = await lablink(["fleet", "scale", "cli-local", "0"], { token: tokens.admin });
    expect(scaled.code, scaled.stderr).toBe(0);
    expect(scaled.stdout).toMatch(/operation [0-9a-f-]{36} \(fleet\.scale\) queued/);
    expect(fleetId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("exports usage as CSV, creates an enrollment token, promotes a user", async () => {
    const target = await makeUser(t.db, "researcher");
    const [usage, enroll, promoted] = await Promise.all([
      lablink(["usage", "export", "--csv", "--days", "7"], { token: tokens.read }),
      lablink(["enroll-token", "create", "--fleet", byo.name, "--max-uses", "3", "--json"], {
        token: tokens.admin,
      }),
      lablink(["user", "promote", target.email ?? ""], { token: tokens.admin }),
    ]);
    expect(usage.code, usage.stderr).toBe(0);
    const rows = usage.stdout.trim().split("\r\n");
    expect(rows[0]).toBe("email,name,holds,hours,gpu_hours,holding_now");
    expect(rows[1]).toMatch(
      new RegExp(`^${researcher.email},${researcher.name},1,[0-9.]+,[0-9.]+,true$`),
    );

    expect(enroll.code, enroll.stderr).toBe(0);
    expect(JSON.parse(enroll.stdout)).toMatchObject({
      token: expect.stringMatching(/^lle_/),
      maxUses: 3,
    });

    expect(promoted.code, promoted.stderr).toBe(0);
    const [row] = await t.db.select().from(users).where(eq(users.id, target.id));
    expect(row?.role).toBe("admin");
  });

  it("refuses a read-only token's change and a revoked token, with the server's message", async () => {
    const [readOnly, revoked, noToken] = await Promise.all([
      lablink(["fleet", "scale", gpuFleet.name, "3"], { token: tokens.read }),
      lablink(["fleet", "list"], { token: tokens.revoked }),
      lablink(["fleet", "list"]),
    ]);
    expect(readOnly.code).toBe(1);
    expect(readOnly.stderr).toMatch(/read-only/);
    expect(revoked.code).toBe(1);
    expect(revoked.stderr).toMatch(/revoked/);
    // A usage error (no token configured) exits 2, before any request.
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toMatch(/LABLINK_TOKEN/);
  });

  it("config check prints every problem of a bad environment at once and exits 1", async () => {
    const bad = await lablink(["config", "check"], {
      env: { DATABASE_URL: "mysql://db/lablink", PORT: "99999", AUTH_SECRET: "short" },
    });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/DATABASE_URL: must be a postgres/);
    expect(bad.stderr).toMatch(/PORT:/);
    expect(bad.stderr).toMatch(/AUTH_SECRET: must be at least 32 characters/);
  });

  it("runs as `npx lablink` from the repository", async () => {
    const run = await lablink(["fleet", "list"], { token: tokens.read, npx: true });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^NAME\s+DRIVER/);
    expect(run.stdout).toContain("cli-local");
  });
});
