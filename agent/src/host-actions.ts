import { lstat, readdir, rm } from "node:fs/promises";
import { isAbsolute, join, normalize, sep } from "node:path";
import type { ResearchUser, UnixAccounts } from "./accounts";
import { sleep } from "./backoff";
import {
  type AssignCommand,
  type CommandActions,
  type ConnectCommand,
  StateDirActions,
  type WipeCommand,
} from "./commands";
import type { DesktopAccount, DesktopHost } from "./desktop/host";
import { removeCrdRegistration, runStartHost } from "./handoff/crd";
import { AuthorizedKeys } from "./handoff/ssh";
import type { Logger } from "./log";
import type { ResearchContainer } from "./research-container";
import type { ProcessLister } from "./usage/processes";

export { lookupUser, type ResearchUser } from "./accounts";

import type { WorkFolder } from "./work-export";

/** What a wipe removes from the research home besides SSH keys and the CRD registration. */
export type FilePolicy = { kind: "none" } | { kind: "home" } | { kind: "paths"; paths: string[] };

/** Kept by a "home" wipe: the shell's skeleton files and `.ssh` (our keys are removed from it). */
const KEEP_IN_HOME = new Set([".ssh", ".bashrc", ".profile", ".bash_logout"]);

export type HostActionsOptions = {
  stateDir: string;
  /** The real research user; null in the local fleet, where its home is simulated. */
  user: ResearchUser | null;
  /** The home used when `user` is null. */
  simulatedHome: string;
  crd: { startHost: string; hostName: string; redirectUrl: string; timeoutMs?: number };
  files: FilePolicy;
  /** Kill the research user's processes on wipe (real user only, never root or the agent). */
  killProcesses: boolean;
  processes: ProcessLister;
  /**
   * One throw-away Unix account per assignment (cloud VMs; tests running as root). When set,
   * `user`, `files` and `killProcesses` do not apply: the whole account goes on release.
   */
  accounts?: UnixAccounts | null;
  /** The research container, replaced by a fresh one on release (cloud VMs). */
  container?: ResearchContainer | null;
  /** The browser desktop, started for the holder's first viewer and stopped at wipe. */
  desktop?: DesktopHost | null;
  log: Logger;
};

/** Checks a relative wipe path: inside the home, no `..`, not absolute. */
export function safeRelativePath(path: string): string | null {
  if (!path || isAbsolute(path)) return null;
  const n = normalize(path);
  if (n === "." || n.startsWith("..") || n.split(sep).includes("..")) return null;
  return n;
}

/** A home a wipe may delete in: absolute, normalized, and not "/" or a top-level folder. */
function checkHome(home: string): void {
  const n = normalize(home);
  if (!isAbsolute(n) || n !== home.replace(/\/+$/, "") || n.split(sep).filter(Boolean).length < 2) {
    throw new Error(`refusing to wipe files under "${home}": not a safe home folder`);
  }
}

/**
 * Sets the VM up for a researcher and wipes it afterwards: SSH keys, CRD hand-off, the research
 * user's processes and files. The same code runs in the local fleet with the home in the state
 * directory, the fake start-host, and no process killing.
 */
export class HostActions implements CommandActions {
  private readonly markers: StateDirActions;
  private readonly keys: AuthorizedKeys;

  constructor(private readonly o: HostActionsOptions) {
    this.markers = new StateDirActions(o.stateDir);
    this.keys = new AuthorizedKeys(this.home, o.user ? { uid: o.user.uid, gid: o.user.gid } : null);
  }

  get home(): string {
    return this.o.user?.home ?? this.o.simulatedHome;
  }

  /** Returns the assignments set up and not yet wiped (see StateDirActions). */
  init(): Promise<string[]> {
    return this.markers.init();
  }

  async assign(command: AssignCommand): Promise<void> {
    await this.markers.assign(command);
    await this.setUp(command);
    // The browser desktop starts when its first viewer connects (DesktopHost.relay), not here: a
    // holder who works over SSH never pays for an X server, and the assignment is not delayed.
  }

  /** Whose desktop: the assignment's own account, else the research user (or the agent's). */
  async desktopAccount(assignmentId: string): Promise<DesktopAccount> {
    if (this.o.accounts) {
      const user = await this.o.accounts.forAssignment(assignmentId);
      if (!user) throw new Error("this VM is not set up for you yet; try again in a minute");
      return { user, home: user.home };
    }
    return { user: this.o.user, home: this.home };
  }

  private async setUp(command: AssignCommand): Promise<void> {
    const accounts = this.o.accounts;
    if (!accounts) {
      await this.keys.install(command.sshKeys ?? []);
      return;
    }
    if (!command.account) throw new Error("the server named no account for this assignment");
    const user = await accounts.create(
      command.account.name,
      command.assignmentId,
      command.account.root,
    );
    // A fresh home from /etc/skel: these keys are the only ones in it.
    await new AuthorizedKeys(user.home, { uid: user.uid, gid: user.gid }).install(
      command.sshKeys ?? [],
    );
  }

  async connect(command: ConnectCommand): Promise<void> {
    let user = this.o.user;
    if (this.o.accounts) {
      user = await this.o.accounts.forAssignment(command.assignmentId);
      if (!user) throw new Error("this VM is not set up for you yet; try again in a minute");
    }
    await runStartHost(command.code, command.pin, {
      ...this.o.crd,
      user,
      home: user?.home ?? this.home,
    });
  }

  /**
   * The work folder a researcher downloads: their home folder. With an account per assignment,
   * that account's home, read as that account; otherwise the research user's (or the simulated) home.
   */
  async workFolder(assignmentId: string): Promise<WorkFolder | null> {
    if (!(await this.markers.workFolder(assignmentId))) return null;
    if (this.o.accounts) {
      const user = await this.o.accounts.forAssignment(assignmentId);
      return user ? { path: user.home, uid: user.uid, gid: user.gid } : null;
    }
    const user = this.o.user;
    return user ? { path: user.home, uid: user.uid, gid: user.gid } : { path: this.home };
  }

  /** Every step runs even if an earlier one failed; the first failure is then reported. */
  async wipe(command: WipeCommand): Promise<void> {
    const failures: string[] = [];
    const step = async (name: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        failures.push(`${name}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    const desktop = this.o.desktop;
    if (desktop) await step("browser desktop", () => desktop.stop());
    const accounts = this.o.accounts;
    if (accounts) {
      // Every account this agent made, not only this assignment's: a wipe after a crash or a
      // reboot may come for an assignment whose account was never recorded as done.
      await step("accounts", () => accounts.removeAll());
    } else {
      await step("processes", () => this.killUserProcesses());
      await step("remote desktop", () => removeCrdRegistration(this.home));
      await step("ssh keys", () => this.keys.remove());
      await step("files", () => this.wipeFiles());
    }
    const container = this.o.container;
    if (container) await step("research container", () => container.reset());
    if (failures.length > 0) throw new Error(`wipe incomplete (${failures.join("; ")})`);
    await this.markers.wipe(command);
  }

  private async killUserProcesses(): Promise<void> {
    const user = this.o.user;
    if (!this.o.killProcesses || !user) return;
    if (user.uid === 0 || user.uid === process.getuid?.()) {
      throw new Error("refusing to kill the processes of root or of the agent's own user");
    }
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      const victims = (await this.o.processes.list()).filter((p) => p.uid === user.uid);
      if (victims.length === 0) return;
      for (const p of victims) {
        try {
          process.kill(p.pid, signal);
        } catch {
          // gone already
        }
      }
      if (signal === "SIGTERM") {
        for (let i = 0; i < 30; i++) {
          await sleep(100);
          const left = (await this.o.processes.list()).filter((p) => p.uid === user.uid);
          if (left.length === 0) return;
        }
      }
    }
    this.o.log.info("research user's processes stopped", { user: user.name });
  }

  private async wipeFiles(): Promise<void> {
    const policy = this.o.files;
    if (policy.kind === "none") return;
    const home = this.home;
    checkHome(home);
    if (policy.kind === "home") {
      const entries = await readdir(home).catch(() => [] as string[]);
      for (const entry of entries) {
        if (!KEEP_IN_HOME.has(entry)) await rm(join(home, entry), { recursive: true, force: true });
      }
      return;
    }
    for (const raw of policy.paths) {
      const rel = safeRelativePath(raw);
      if (!rel) throw new Error(`refusing to wipe "${raw}": not a path inside the home`);
      // No component may be a link the research user planted (it could point anywhere).
      const parts = rel.split(sep);
      let at = home;
      let exists = true;
      for (const part of parts.slice(0, -1)) {
        at = join(at, part);
        const s = await lstat(at).catch(() => null);
        if (!s) {
          exists = false;
          break;
        }
        if (s.isSymbolicLink() || !s.isDirectory()) {
          throw new Error(`refusing to wipe "${raw}": ${part} is not a plain folder`);
        }
      }
      if (exists) await rm(join(home, rel), { recursive: true, force: true });
    }
  }
}
