import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";

/**
 * What `npm start` needs to know about other processes on this machine: whether a pid is alive,
 * what it runs, its descendants, and who listens on a port. Linux reads /proc; elsewhere `ps` and
 * `lsof` answer when present. Every answer is best effort: null/empty when the system won't say.
 */

export type ProcessInfo = { pid: number; ppid: number; command: string };

const hasProc = process.platform === "linux" && existsSync("/proc/self/stat");

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, it is just not ours.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * A process that has exited but was not reaped (its parent was killed too, and the init of a
 * container may never reap it): `kill(pid, 0)` still succeeds, so it looks alive to anyone asking
 * that way, Postgres included.
 */
export function isZombie(pid: number): boolean {
  if (!hasProc) return false;
  try {
    // "<pid> (<comm>) <state> …": the comm may hold spaces and parentheses, the state follows the last ")".
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state === "Z" || state === "X";
  } catch {
    return false;
  }
}

/** Alive and not a zombie. */
export function isRunning(pid: number): boolean {
  return isAlive(pid) && !isZombie(pid);
}

/** The command line of a process, or null when it is gone or the system does not say. */
export function commandLine(pid: number): string | null {
  if (hasProc) {
    try {
      const raw = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      return raw.replace(/\0+$/, "").split("\0").join(" ") || null;
    } catch {
      return null;
    }
  }
  const r = spawnSync("ps", ["-o", "args=", "-p", String(pid)], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() || null : null;
}

/** Every process with its parent (empty when neither /proc nor `ps` is there). */
export function processTable(): ProcessInfo[] {
  const rows: ProcessInfo[] = [];
  if (hasProc) {
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
        // The command name may hold spaces and parentheses: fields start after the last ")".
        const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        // A zombie has ended; only its parent's wait() is missing.
        if (state === "Z") continue;
        rows.push({
          pid: Number(entry),
          ppid: Number(ppid),
          command: commandLine(Number(entry)) ?? "",
        });
      } catch {
        // Gone while we looked.
      }
    }
    return rows;
  }
  const r = spawnSync("ps", ["-A", "-o", "pid=,ppid=,args="], { encoding: "utf8" });
  if (r.status !== 0) return rows;
  for (const line of r.stdout.split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line);
    if (m) rows.push({ pid: Number(m[1]), ppid: Number(m[2]), command: m[3] ?? "" });
  }
  return rows;
}

/** The processes below `pid` (children first, then theirs), not `pid` itself. */
export function descendants(pid: number, table = processTable()): ProcessInfo[] {
  const out: ProcessInfo[] = [];
  let frontier = [pid];
  while (frontier.length > 0) {
    const parents = new Set(frontier);
    const next = table.filter((p) => parents.has(p.ppid) && !out.some((o) => o.pid === p.pid));
    out.push(...next);
    frontier = next.map((p) => p.pid);
  }
  return out;
}

/** The process listening on a TCP port, or null when none or the system does not say. */
export function portHolder(port: number): { pid: number; command: string } | null {
  if (hasProc) {
    const inodes = new Set<string>();
    for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
      let text: string;
      try {
        text = readFileSync(table, "utf8");
      } catch {
        continue;
      }
      for (const line of text.split("\n").slice(1)) {
        const f = line.trim().split(/\s+/);
        // local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the socket's inode.
        const local = f[1];
        if (!local || f[3] !== "0A") continue;
        if (Number.parseInt(local.split(":")[1] ?? "", 16) === port && f[9]) inodes.add(f[9]);
      }
    }
    if (inodes.size === 0) return null;
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      let fds: string[];
      try {
        fds = readdirSync(`/proc/${entry}/fd`);
      } catch {
        continue;
      }
      for (const fd of fds) {
        let target: string;
        try {
          target = readlinkSync(`/proc/${entry}/fd/${fd}`);
        } catch {
          continue;
        }
        const m = /^socket:\[(\d+)\]$/.exec(target);
        if (m?.[1] && inodes.has(m[1])) {
          const pid = Number(entry);
          return { pid, command: commandLine(pid) ?? "" };
        }
      }
    }
    return null;
  }
  const r = spawnSync("lsof", ["-nP", `-iTCP:${port}`, "-sTCP:LISTEN", "-t"], {
    encoding: "utf8",
  });
  const pid = Number(r.stdout?.split("\n")[0]);
  if (r.status !== 0 || !Number.isInteger(pid) || pid <= 0) return null;
  return { pid, command: commandLine(pid) ?? "" };
}
