import { basename } from "node:path";
import type { ProcessInfo } from "./processes";

/** What decides "in use" and "idle" (agent configuration, see README). */
export type UsageRules = {
  /** Executable names of the research software, matched exactly (e.g. "sleap-label", "napari"). */
  researchNames: string[];
  /** Optional admin-written regex, tested against the whole command line (argv joined by spaces). */
  researchPattern: RegExp | null;
  /** Only this user's processes and sessions count; null = anyone's. */
  researchUid: number | null;
  /** Only SSH sessions of this user count; null = anyone's. */
  researchUser: string | null;
  /** GPU utilisation at or above this (max over GPUs) is activity. */
  gpuBusyPct: number;
  /** Research processes using at least this share of one core between samples are active. */
  cpuBusyPct: number;
  /** Input more recent than this counts as "in use" and as activity. */
  inputRecentMs: number;
  /** Inactivity must last this long before the VM is reported idle. */
  idleAfterMs: number;
};

export const DEFAULT_RULES: UsageRules = {
  researchNames: [],
  researchPattern: null,
  researchUid: null,
  researchUser: null,
  gpuBusyPct: 10,
  cpuBusyPct: 5,
  inputRecentMs: 5 * 60_000,
  idleAfterMs: 30 * 60_000,
};

/** Interpreters whose first script argument names the program (`python3 /usr/bin/sleap-label`). */
const INTERPRETERS = /^(python[\d.]*|pythonw|node|perl|ruby|bash|sh|dash|java|Rscript|julia)$/;

/**
 * The names a process is known by: its executable, its kernel name, argv[0], and for an
 * interpreter the script it runs. Never any other argument: `vim notes-about-sleap.txt` is not
 * SLEAP running (the original matched any substring of any argument).
 */
export function programNames(p: ProcessInfo): string[] {
  const names = new Set<string>();
  if (p.exe) names.add(p.exe);
  if (p.comm) names.add(p.comm);
  const argv0 = p.argv[0] ? basename(p.argv[0]) : "";
  if (argv0) names.add(argv0);
  const interpreter = [p.exe, p.comm, argv0].some((n) => n && INTERPRETERS.test(n));
  if (interpreter) {
    // First argument that is not an option (`python3 -u script.py`); `-m module` names the module.
    for (let i = 1; i < p.argv.length; i++) {
      const arg = p.argv[i] ?? "";
      if (arg === "-m" || arg === "-jar") {
        const next = p.argv[i + 1];
        if (next) names.add(next);
        break;
      }
      if (arg.startsWith("-")) continue;
      names.add(basename(arg));
      break;
    }
  }
  return [...names];
}

export function isResearchProcess(p: ProcessInfo, rules: UsageRules): boolean {
  if (rules.researchUid !== null && p.uid !== rules.researchUid) return false;
  if (rules.researchNames.length > 0) {
    const names = programNames(p);
    // comm is cut to 15 characters by the kernel: "sleap-label-gui" fits, longer names match
    // on their first 15 characters only through comm.
    if (
      rules.researchNames.some(
        (want) => names.includes(want) || (want.length > 15 && p.comm === want.slice(0, 15)),
      )
    ) {
      return true;
    }
  }
  return rules.researchPattern?.test(p.argv.join(" ")) ?? false;
}

/**
 * Whether a process, known so far only by its kernel name, could matter to these rules; only
 * those get their uid, executable and arguments read (a /proc scan stays cheap on a busy VM).
 */
export function needsDetails(comm: string, rules: UsageRules): boolean {
  if (rules.researchPattern) return true;
  if (INTERPRETERS.test(comm) || comm.startsWith("sshd") || comm === CRD_HOST.slice(0, 15)) {
    return true;
  }
  return rules.researchNames.some((n) => n === comm || n.slice(0, 15) === comm);
}

export type Session = { kind: "ssh" | "crd"; user: string; pid: number };

/** OpenSSH names its per-connection process "sshd: user@pts/0" ("sshd-session:" from 9.8 on). */
const SSHD_TITLE = /^sshd(?:-session)?: ([a-z_][a-z0-9_.-]*[$]?)@(\S+)/i;
const CRD_HOST = "chrome-remote-desktop-host";

/** Remote sessions visible in the process table: SSH logins and the CRD host's desktop session. */
export function findSessions(processes: ProcessInfo[], rules: UsageRules): Session[] {
  const sessions: Session[] = [];
  for (const p of processes) {
    const title = p.argv[0] ?? "";
    const ssh = SSHD_TITLE.exec(title);
    if (ssh?.[1] && (rules.researchUser === null || ssh[1] === rules.researchUser)) {
      sessions.push({ kind: "ssh", user: ssh[1], pid: p.pid });
      continue;
    }
    const names = [p.exe, p.comm, title ? basename(title) : ""];
    // comm is truncated to 15 characters: "chrome-remote-d".
    if (names.includes(CRD_HOST) || p.comm === CRD_HOST.slice(0, 15)) {
      if (rules.researchUid === null || p.uid === rules.researchUid) {
        sessions.push({ kind: "crd", user: String(p.uid ?? "?"), pid: p.pid });
      }
    }
  }
  return sessions;
}

export type UsageSample = {
  /** Epoch ms of the sample. */
  at: number;
  processes: ProcessInfo[];
  /** Highest GPU utilisation, or null without readings. */
  gpuUtilPct: number | null;
  /** Epoch ms of the last keyboard/mouse input; undefined when no input source is configured. */
  lastInputAt?: number;
  /** Host clock ticks per second (USER_HZ, 100 on Linux). */
  ticksPerSecond?: number;
};

export type UsageReport = {
  inUse: boolean;
  /** When activity stopped, once inactivity has lasted `idleAfterMs`; else null. */
  idleSince: string | null;
  /** Why the VM is in use / active, for logs and the admin view ("ssh:ada", "process:sleap-label"). */
  signals: string[];
};

/**
 * Turns successive samples into "in use" and "idle since". In use: a research process runs, a
 * remote session is open, or input is recent. Idle: no session, GPU below the threshold and no
 * research-process CPU activity (nor input) for `idleAfterMs`. A research GUI left open overnight
 * is therefore in use but idle, which is what a reclaim policy needs to know.
 */
export class IdleTracker {
  private lastActiveAt: number;
  private previousTicks = new Map<number, number>();
  private previousAt: number | null = null;

  constructor(
    private readonly rules: UsageRules,
    startedAt: number,
  ) {
    // The agent just started: count from now rather than claim a long idle period we did not see.
    this.lastActiveAt = startedAt;
  }

  update(sample: UsageSample): UsageReport {
    const rules = this.rules;
    const research = sample.processes.filter((p) => isResearchProcess(p, rules));
    const sessions = findSessions(sample.processes, rules);
    const inputRecent =
      sample.lastInputAt !== undefined && sample.at - sample.lastInputAt < rules.inputRecentMs;

    const signals: string[] = [
      ...sessions.map((s) => `${s.kind}:${s.user}`),
      ...[...new Set(research.map((p) => `process:${programNames(p)[0] ?? p.comm}`))],
      ...(inputRecent ? ["input"] : []),
    ];
    const inUse = signals.length > 0;

    const hz = sample.ticksPerSecond ?? 100;
    const elapsedS = this.previousAt === null ? 0 : (sample.at - this.previousAt) / 1000;
    let cpuActive = false;
    const ticks = new Map<number, number>();
    for (const p of research) {
      ticks.set(p.pid, p.cpuTicks);
      const before = this.previousTicks.get(p.pid);
      // A research process we have not seen before (just started) is activity too.
      if (before === undefined) cpuActive = true;
      else if (elapsedS > 0 && ((p.cpuTicks - before) / hz / elapsedS) * 100 >= rules.cpuBusyPct)
        cpuActive = true;
    }
    this.previousTicks = ticks;
    this.previousAt = sample.at;

    const gpuActive = sample.gpuUtilPct !== null && sample.gpuUtilPct >= rules.gpuBusyPct;
    // A CRD host counts as a session only while nobody can tell us about input: with an input
    // source configured, a registered-but-untouched CRD desktop can become idle.
    const sessionActive = sessions.some(
      (s) => s.kind === "ssh" || sample.lastInputAt === undefined,
    );
    const active = sessionActive || gpuActive || cpuActive || inputRecent;
    if (active) this.lastActiveAt = sample.at;
    const idleFor = sample.at - this.lastActiveAt;
    return {
      inUse,
      idleSince:
        !active && idleFor >= rules.idleAfterMs ? new Date(this.lastActiveAt).toISOString() : null,
      signals,
    };
  }
}
