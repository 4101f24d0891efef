import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { access, lstat, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { isAbsolute, join, normalize } from "node:path";
import { sleep } from "./backoff";
import { childEnv } from "./child-env";
import type { Logger } from "./log";
import type { ProcessLister } from "./usage/processes";

/** A Unix account on the VM. */
export type ResearchUser = { name: string; uid: number; gid: number; home: string };

/**
 * Per-assignment account names come from the server (`ll-` and 12 hex digits of the assignment
 * id). Nothing else is ever created or deleted: a name that is not of this form, or that exists
 * without our record of creating it, is refused, so a real user can never be removed.
 */
export const ACCOUNT_NAME = /^ll-[0-9a-f]{12}$/;

/** Runs a program (no shell) and reports how it ended; never throws for a non-zero exit. */
export type Runner = (
  file: string,
  args: readonly string[],
) => Promise<{ code: number; stdout: string; stderr: string }>;

/** Runs programs with `execFile` and a minimal environment (the agent's token never leaks). */
export const execRunner =
  (timeoutMs = 30_000): Runner =>
  (file, args) =>
    new Promise((resolve) => {
      execFile(
        file,
        [...args],
        {
          timeout: timeoutMs,
          env: childEnv({ PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" }),
          maxBuffer: 1 << 20,
        },
        (err, stdout, stderr) => {
          const code =
            err === null ? 0 : typeof err.code === "number" ? err.code : err.code ? 127 : 1;
          resolve({ code, stdout: String(stdout), stderr: String(stderr) });
        },
      );
    });

/** Whether a program is installed (PATH of the agent, plus the sbin folders root uses). */
export async function which(name: string): Promise<string | null> {
  const dirs = [
    ...(process.env.PATH ?? "").split(":"),
    "/usr/local/sbin",
    "/usr/sbin",
    "/sbin",
    "/usr/bin",
    "/bin",
  ].filter(Boolean);
  for (const dir of dirs) {
    const path = join(dir, name);
    try {
      await access(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return null;
}

/** Finds a user in /etc/passwd-format text (no NSS: research users are local accounts). */
export function lookupUser(name: string, passwd: string): ResearchUser | null {
  for (const line of passwd.split("\n")) {
    const [user, , uid, gid, , home] = line.split(":");
    if (user === name && uid && gid && home) {
      return { name, uid: Number(uid), gid: Number(gid), home };
    }
  }
  return null;
}

/** Whether /etc/group-format text has this group. */
export function hasGroup(name: string, group: string): boolean {
  return group.split("\n").some((line) => line.split(":")[0] === name);
}

export type UnixAccountsOptions = {
  /** Records of the accounts this agent created (so a crash between steps is cleaned up later). */
  stateDir: string;
  /** First uid handed out; every account gets a new one, never reused on this VM (see below). */
  uidBase?: number;
  run?: Runner;
  /** Where programs are found (tests: a stand-in); default: `which`. */
  find?: (name: string) => Promise<string | null>;
  passwdFile?: string;
  groupFile?: string;
  sudoersDir?: string;
  /** World-writable folders swept for the account's files on release. */
  tmpDirs?: string[];
  /** Where cron keeps per-user crontabs (Debian, then Red Hat layout). */
  cronSpools?: string[];
  processes: ProcessLister;
  log: Logger;
};

type AccountRecord = { name: string; uid: number; assignmentId: string; root: boolean };

/**
 * One throw-away Unix account per assignment, created on assign and deleted with everything it
 * left on release: processes, crontab, containers, files in /tmp, /var/tmp and /dev/shm, home.
 *
 * Uids are never reused on one VM: a file the account left somewhere no sweep reaches would
 * otherwise belong to the next holder, whose fresh account got the same uid.
 */
export class UnixAccounts {
  private readonly run: Runner;
  private readonly find: (name: string) => Promise<string | null>;
  private readonly dir: string;

  constructor(private readonly o: UnixAccountsOptions) {
    this.run = o.run ?? execRunner();
    this.find = o.find ?? which;
    this.dir = join(o.stateDir, "accounts");
  }

  /** True where this agent can manage accounts: root, with useradd and userdel installed. */
  static async available(find: (name: string) => Promise<string | null> = which) {
    return process.getuid?.() === 0 && !!(await find("useradd")) && !!(await find("userdel"));
  }

  private passwd(): Promise<string> {
    return readFile(this.o.passwdFile ?? "/etc/passwd", "utf8");
  }

  private async records(): Promise<AccountRecord[]> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const out: AccountRecord[] = [];
    for (const f of await readdir(this.dir)) {
      if (!f.endsWith(".json")) continue;
      try {
        const r = JSON.parse(await readFile(join(this.dir, f), "utf8")) as AccountRecord;
        if (ACCOUNT_NAME.test(r.name) && Number.isInteger(r.uid)) out.push(r);
      } catch {
        // a half-written record: its account (if any) has no files yet worth more than a warning
        this.o.log.warn("unreadable account record", { file: f });
      }
    }
    return out;
  }

  private async nextUid(): Promise<number> {
    const base = this.o.uidBase ?? 200_000;
    const counter = join(this.dir, "next-uid");
    const saved = Number((await readFile(counter, "utf8").catch(() => "")).trim()) || base;
    const taken = new Set(
      (await this.passwd())
        .split("\n")
        .map((l) => Number(l.split(":")[2]))
        .filter(Number.isInteger),
    );
    let uid = Math.max(saved, base);
    while (taken.has(uid)) uid += 1;
    await writeFile(`${counter}.tmp`, `${uid + 1}\n`, { mode: 0o600 });
    await rename(`${counter}.tmp`, counter);
    return uid;
  }

  private async must(file: string, args: string[], okCodes: number[] = [0]) {
    const path = await this.find(file);
    if (!path) throw new Error(`${file} is not installed`);
    const r = await this.run(path, args);
    if (!okCodes.includes(r.code)) {
      throw new Error(`${file} exited with ${r.code}: ${r.stderr.trim().slice(0, 300)}`);
    }
    return r;
  }

  /** Creates the assignment's account (idempotent) and returns it. */
  async create(name: string, assignmentId: string, root: boolean): Promise<ResearchUser> {
    if (!ACCOUNT_NAME.test(name)) throw new Error(`refusing to create account "${name}"`);
    const mine = (await this.records()).find((r) => r.name === name);
    const existing = lookupUser(name, await this.passwd());
    if (existing && !mine) {
      throw new Error(`an account "${name}" exists that this agent did not create; not using it`);
    }
    if (!existing) {
      const uid = mine?.uid ?? (await this.nextUid());
      // The record comes first: an account created by a run that then crashed is still ours.
      const record: AccountRecord = { name, uid, assignmentId, root };
      const file = join(this.dir, `${name}.json`);
      await writeFile(`${file}.tmp`, JSON.stringify(record), { mode: 0o600 });
      await rename(`${file}.tmp`, file);
      await this.must("useradd", [
        "--create-home",
        "--skel",
        "/etc/skel",
        "--shell",
        "/bin/bash",
        "--uid",
        String(uid),
        "--user-group",
        "--comment",
        "LabLink researcher",
        name,
      ]);
    }
    const user = lookupUser(name, await this.passwd());
    if (!user) throw new Error(`useradd did not create "${name}"`);
    await this.grantRoot(user, root);
    return user;
  }

  private sudoersFile(name: string): string {
    return join(this.o.sudoersDir ?? "/etc/sudoers.d", `lablink-${name}`);
  }

  /** Only a fleet marked "root for researchers" does this; its VMs are replaced, never wiped. */
  private async grantRoot(user: ResearchUser, root: boolean): Promise<void> {
    if (!root) return;
    const groups = await readFile(this.o.groupFile ?? "/etc/group", "utf8").catch(() => "");
    if (hasGroup("docker", groups)) await this.must("usermod", ["-aG", "docker", user.name]);
    await writeFile(this.sudoersFile(user.name), `${user.name} ALL=(ALL) NOPASSWD:ALL\n`, {
      mode: 0o440,
    });
  }

  /** The account currently recorded for this assignment, if it exists. */
  async forAssignment(assignmentId: string): Promise<ResearchUser | null> {
    const r = (await this.records()).find(
      (x) => x.assignmentId.toLowerCase() === assignmentId.toLowerCase(),
    );
    return r ? lookupUser(r.name, await this.passwd()) : null;
  }

  /** Deletes every account this agent created, with everything they left. */
  async removeAll(): Promise<void> {
    const failures: string[] = [];
    for (const r of await this.records()) {
      try {
        await this.remove(r);
      } catch (err) {
        failures.push(`${r.name}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    if (failures.length > 0) throw new Error(failures.join("; "));
  }

  private async remove(r: AccountRecord): Promise<void> {
    const user = lookupUser(r.name, await this.passwd());
    if (user && user.uid !== r.uid) {
      throw new Error(`"${r.name}" now has uid ${user.uid}, not ${r.uid}; not touching it`);
    }
    if (r.uid === 0 || r.uid === process.getuid?.()) throw new Error("refusing to remove root");
    const failures: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        failures.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    await step("processes", () => this.killAll(r));
    await step("crontab", () => this.removeCrontab(r.name));
    await step("containers", () => this.removeContainers(r.name));
    await step("temporary files", () => this.removeTmpFiles(r.uid));
    await step("sudo", () => rm(this.sudoersFile(r.name), { force: true }));
    if (user) {
      // userdel refuses an account with processes left; the kill above ran first.
      await step("account", () => this.must("userdel", ["--remove", r.name], [0, 6, 12]));
      await step("home", () => removeHome(user.home));
    }
    if (failures.length > 0) throw new Error(failures.join("; "));
    await rm(join(this.dir, `${r.name}.json`), { force: true });
    this.o.log.info("research account removed", { account: r.name });
  }

  /** SIGKILL until none is left: a process may fork while we look. */
  private async killAll(r: AccountRecord): Promise<void> {
    const loginctl = await this.find("loginctl");
    // Ends the logind sessions too (SSH and desktop), so nothing respawns a shell.
    if (loginctl) await this.run(loginctl, ["terminate-user", r.name]);
    for (let i = 0; i < 50; i++) {
      const left = (await this.o.processes.list(() => true)).filter((p) => p.uid === r.uid);
      if (left.length === 0) return;
      for (const p of left) {
        try {
          process.kill(p.pid, "SIGKILL");
        } catch {
          // gone already
        }
      }
      await sleep(100);
    }
    throw new Error(`processes of ${r.name} keep running`);
  }

  private async removeCrontab(name: string): Promise<void> {
    const crontab = await this.find("crontab");
    if (crontab) await this.run(crontab, ["-r", "-u", name]);
    // Also the spool file itself: cron may be installed after the account planted one.
    for (const spool of this.o.cronSpools ?? ["/var/spool/cron/crontabs", "/var/spool/cron"]) {
      await rm(join(spool, name), { force: true });
    }
  }

  private async removeContainers(name: string): Promise<void> {
    const docker = await this.find("docker");
    if (!docker) return;
    const r = await this.run(docker, ["ps", "-aq", "--filter", `label=lablink.account=${name}`]);
    const ids =
      r.code === 0 ? r.stdout.split(/\s+/).filter((id) => /^[0-9a-f]{6,64}$/.test(id)) : [];
    if (ids.length > 0) await this.must("docker", ["rm", "-f", "-v", ...ids]);
  }

  private async removeTmpFiles(uid: number): Promise<void> {
    for (const dir of this.o.tmpDirs ?? ["/tmp", "/var/tmp", "/dev/shm"]) {
      await removeOwnedBy(dir, uid);
    }
  }
}

/**
 * Removes everything under `dir` owned by `uid`; never follows a link (a link the account
 * planted is removed itself, not its target). Only world-writable folders of others are searched:
 * nowhere else could the account have created anything.
 */
export async function removeOwnedBy(dir: string, uid: number, depth = 0): Promise<void> {
  if (depth > 32) return;
  const entries = await readdir(dir).catch(() => [] as string[]);
  for (const entry of entries) {
    const path = join(dir, entry);
    const s = await lstat(path).catch(() => null);
    if (!s) continue;
    if (s.uid === uid) await rm(path, { recursive: true, force: true });
    else if (s.isDirectory() && (s.mode & 0o002) !== 0) await removeOwnedBy(path, uid, depth + 1);
  }
}

async function removeHome(home: string): Promise<void> {
  const n = normalize(home);
  // userdel removes the home; this catches a home userdel left (exit 12), never "/" or "/home".
  if (!isAbsolute(n) || n.split("/").filter(Boolean).length < 2) return;
  await rm(n, { recursive: true, force: true });
}
