import { readdir, readFile, readlink } from "node:fs/promises";
import { basename, join } from "node:path";

/** One process, as much as /proc tells an unprivileged or root reader. */
export type ProcessInfo = {
  pid: number;
  /** Real uid (from `status`); null if unreadable. */
  uid: number | null;
  /** Kernel's short name (`comm`, at most 15 characters). */
  comm: string;
  /** Basename of the executable (`exe` link), null when not readable (other users' processes). */
  exe: string | null;
  /** Arguments, argv[0] first; a process may rewrite them (sshd does: "sshd: ada@pts/0"). */
  argv: string[];
  /** User + system CPU time in clock ticks, for "is it doing anything". */
  cpuTicks: number;
};

/**
 * Lists processes. The real one reads /proc; tests hand in a fake /proc tree or a plain list.
 * `details(comm)` says which processes need uid, exe and argv; the others come with only pid, comm
 * and CPU ticks (uid null, exe null, argv []), which saves three reads per process.
 */
export interface ProcessLister {
  list(details?: (comm: string) => boolean): Promise<ProcessInfo[]>;
}

/** Parses /proc/<pid>/stat. The comm field may contain spaces and ')' so split at the last ')'. */
export function parseStat(text: string): { comm: string; cpuTicks: number } | null {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) return null;
  const comm = text.slice(open + 1, close);
  // Fields after ")": state(3) ppid(4) ... utime(14) stime(15); index 0 here is field 3.
  const rest = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
  return { comm, cpuTicks: utime + stime };
}

export function parseUid(status: string): number | null {
  const m = /^Uid:\s+(\d+)/m.exec(status);
  return m ? Number(m[1]) : null;
}

/**
 * Reads processes from a /proc-like tree. A process that exits mid-read is skipped; files this
 * reader may not open (`exe` of another user's process without root) are left null.
 */
export class ProcProcessLister implements ProcessLister {
  constructor(private readonly procRoot = "/proc") {}

  async list(details?: (comm: string) => boolean): Promise<ProcessInfo[]> {
    let entries: string[];
    try {
      entries = await readdir(this.procRoot);
    } catch {
      return [];
    }
    const pids = entries.filter((e) => /^\d+$/.test(e)).map(Number);
    const out = await Promise.all(pids.map((pid) => this.read(pid, details)));
    return out.filter((p): p is ProcessInfo => p !== null);
  }

  private async read(
    pid: number,
    details?: (comm: string) => boolean,
  ): Promise<ProcessInfo | null> {
    const dir = join(this.procRoot, String(pid));
    try {
      const parsed = parseStat(await readFile(join(dir, "stat"), "utf8"));
      if (!parsed) return null;
      if (details && !details(parsed.comm)) {
        return {
          pid,
          uid: null,
          comm: parsed.comm,
          exe: null,
          argv: [],
          cpuTicks: parsed.cpuTicks,
        };
      }
      const [status, cmdline] = await Promise.all([
        readFile(join(dir, "status"), "utf8").catch(() => ""),
        readFile(join(dir, "cmdline"), "utf8").catch(() => ""),
      ]);
      const exe = await readlink(join(dir, "exe")).then(
        (target) => basename(target.replace(/ \(deleted\)$/, "")),
        () => null,
      );
      return {
        pid,
        uid: parseUid(status),
        comm: parsed.comm,
        exe,
        argv: cmdline.split("\0").filter((a, i, all) => a !== "" || i < all.length - 1),
        cpuTicks: parsed.cpuTicks,
      };
    } catch {
      return null; // exited while we read it
    }
  }
}
