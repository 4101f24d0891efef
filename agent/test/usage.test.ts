import { type ChildProcess, spawn } from "node:child_process";
import { chmod, copyFile, mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../src/log";
import {
  DEFAULT_RULES,
  findSessions,
  IdleTracker,
  isResearchProcess,
  needsDetails,
  programNames,
  type UsageRules,
} from "../src/usage/detect";
import { HostUsageMonitor } from "../src/usage/monitor";
import { type ProcessInfo, ProcProcessLister, parseStat } from "../src/usage/processes";
import { tempDir } from "./helpers";

const proc = (pid: number, argv: string[], extra: Partial<ProcessInfo> = {}): ProcessInfo => ({
  pid,
  uid: 1001,
  comm: (argv[0]?.split("/").at(-1) ?? "").slice(0, 15),
  exe: argv[0]?.split("/").at(-1) ?? null,
  argv,
  cpuTicks: 0,
  ...extra,
});

const rules = (over: Partial<UsageRules> = {}): UsageRules => ({
  ...DEFAULT_RULES,
  researchNames: ["sleap-label", "napari"],
  idleAfterMs: 10 * 60_000,
  ...over,
});

/** Writes one process into a fake /proc tree, as the kernel lays it out. */
async function fakeProc(
  root: string,
  p: { pid: number; comm: string; argv: string[]; uid: number; exe: string; ticks: number },
) {
  const dir = join(root, String(p.pid));
  await mkdir(dir, { recursive: true });
  const fields = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", String(p.ticks), "0"];
  await writeFile(join(dir, "stat"), `${p.pid} (${p.comm}) ${fields.join(" ")} 0 0 20 0 1 0 100\n`);
  await writeFile(
    join(dir, "status"),
    `Name:\t${p.comm}\nUid:\t${p.uid}\t${p.uid}\t${p.uid}\t${p.uid}\n`,
  );
  await writeFile(join(dir, "cmdline"), `${p.argv.join("\0")}\0`);
  await symlink(p.exe, join(dir, "exe"));
}

describe("process table (fake /proc)", () => {
  it("reads pid, uid, comm, exe, argv and CPU ticks; a comm with spaces and parens survives", async () => {
    const root = await tempDir();
    await fakeProc(root, {
      pid: 42,
      comm: "sleap-label",
      argv: ["/opt/sleap/bin/python3", "/opt/sleap/bin/sleap-label", "--reset"],
      uid: 1001,
      exe: "/opt/sleap/bin/python3.11",
      ticks: 250,
    });
    await fakeProc(root, {
      pid: 7,
      comm: "my (odd) name",
      argv: ["odd"],
      uid: 0,
      exe: "/usr/bin/odd (deleted)",
      ticks: 3,
    });
    await mkdir(join(root, "self")); // non-numeric entries are not processes
    const list = (await new ProcProcessLister(root).list()).sort((a, b) => a.pid - b.pid);
    expect(list).toEqual([
      { pid: 7, uid: 0, comm: "my (odd) name", exe: "odd", argv: ["odd"], cpuTicks: 3 + 0 },
      {
        pid: 42,
        uid: 1001,
        comm: "sleap-label",
        exe: "python3.11",
        argv: ["/opt/sleap/bin/python3", "/opt/sleap/bin/sleap-label", "--reset"],
        cpuTicks: 250,
      },
    ]);
    expect(parseStat("garbage")).toBeNull();

    // Only processes that could matter get uid, exe and argv read.
    const cheap = await new ProcProcessLister(root).list((comm) => needsDetails(comm, rules()));
    expect(cheap.find((p) => p.pid === 7)).toEqual({
      pid: 7,
      uid: null,
      comm: "my (odd) name",
      exe: null,
      argv: [],
      cpuTicks: 3,
    });
    expect(cheap.find((p) => p.pid === 42)?.argv).toHaveLength(3);
  });

  it("a missing /proc yields no processes rather than an error", async () => {
    expect(await new ProcProcessLister("/nonexistent/proc").list()).toEqual([]);
  });
});

describe("research software is matched by executable name or pattern, never by any argument", () => {
  const r = rules();
  it.each([
    ["the executable itself", proc(1, ["/opt/napari/bin/napari"]), true],
    [
      "a Python entry-point script",
      proc(2, ["/usr/bin/python3", "/opt/sleap/bin/sleap-label"], {
        exe: "python3.11",
        comm: "python3",
      }),
      true,
    ],
    [
      "python -m module",
      proc(3, ["python3", "-m", "napari"], { exe: "python3", comm: "python3" }),
      true,
    ],
    [
      "an editor opening a file named after it",
      proc(4, ["vim", "notes-about-sleap-label.txt"]),
      false,
    ],
    [
      "the name as a later argument",
      proc(5, ["python3", "train.py", "napari"], { exe: "python3" }),
      false,
    ],
    ["a substring of the executable", proc(6, ["/usr/bin/napari-helper"]), false],
    ["a grep for it", proc(7, ["grep", "sleap-label"]), false],
  ])("%s", (_label, p, expected) => {
    expect(isResearchProcess(p, r)).toBe(expected);
  });

  it("only the research user's processes count when one is configured", () => {
    const p = proc(1, ["/opt/napari/bin/napari"], { uid: 0 });
    expect(isResearchProcess(p, rules({ researchUid: 1001 }))).toBe(false);
    expect(isResearchProcess({ ...p, uid: 1001 }, rules({ researchUid: 1001 }))).toBe(true);
  });

  it("a configured pattern is tested against the whole command line", () => {
    const r2 = rules({ researchNames: [], researchPattern: /^python3 .*-m sleap\.gui\b/ });
    expect(isResearchProcess(proc(1, ["python3", "-u", "-m", "sleap.gui"]), r2)).toBe(true);
    expect(isResearchProcess(proc(2, ["python3", "-m", "other"]), r2)).toBe(false);
  });

  it("programNames lists exe, comm, argv[0] and an interpreter's script", () => {
    expect(
      programNames(
        proc(1, ["/usr/bin/python3", "-u", "/x/run.py", "napari"], { exe: "python3.11" }),
      ),
    ).toEqual(["python3.11", "python3", "run.py"]);
  });
});

describe("remote sessions", () => {
  const ps = [
    proc(10, ["sshd: ada@pts/0"], { comm: "sshd", exe: "sshd" }),
    proc(11, ["sshd: ada [priv]"], { comm: "sshd", exe: "sshd", uid: 0 }),
    proc(12, ["sshd-session: bob@notty"], { comm: "sshd-session", exe: "sshd-session" }),
    proc(13, ["/opt/google/chrome-remote-desktop/chrome-remote-desktop-host", "--host-config=-"], {
      comm: "chrome-remote-d",
    }),
    proc(14, ["/usr/sbin/sshd", "-D"], { comm: "sshd", exe: "sshd", uid: 0 }),
  ];
  it("finds SSH logins (not the listener, not the privileged monitor) and the CRD host", () => {
    expect(findSessions(ps, rules())).toEqual([
      { kind: "ssh", user: "ada", pid: 10 },
      { kind: "ssh", user: "bob", pid: 12 },
      { kind: "crd", user: "1001", pid: 13 },
    ]);
  });
  it("only the research user's SSH sessions count when one is configured", () => {
    const found = findSessions(ps, rules({ researchUser: "ada", researchUid: 1001 }));
    expect(found.map((s) => `${s.kind}:${s.user}`)).toEqual(["ssh:ada", "crd:1001"]);
  });
});

describe("in use and idle over time", () => {
  const MIN = 60_000;
  const T0 = Date.parse("2026-11-27T08:00:00Z");

  it("a VM nobody touches becomes idle after the configured time, idleSince = last activity", () => {
    const t = new IdleTracker(rules(), T0);
    const at = (m: number) => T0 + m * MIN;
    expect(t.update({ at: at(1), processes: [], gpuUtilPct: 95 })).toMatchObject({
      inUse: false,
      idleSince: null,
    });
    expect(t.update({ at: at(5), processes: [], gpuUtilPct: 3 }).idleSince).toBeNull();
    expect(t.update({ at: at(10), processes: [], gpuUtilPct: 3 }).idleSince).toBeNull();
    expect(t.update({ at: at(11), processes: [], gpuUtilPct: 3 })).toEqual({
      inUse: false,
      idleSince: new Date(at(1)).toISOString(),
      signals: [],
    });
    // The GPU gets busy again: active, no longer idle.
    expect(t.update({ at: at(12), processes: [], gpuUtilPct: 60 }).idleSince).toBeNull();
  });

  it("an open SSH session keeps the VM in use and active", () => {
    const t = new IdleTracker(rules(), T0);
    const ssh = [proc(10, ["sshd: ada@pts/0"], { comm: "sshd" })];
    const report = t.update({ at: T0 + 60 * MIN, processes: ssh, gpuUtilPct: 0 });
    expect(report).toEqual({ inUse: true, idleSince: null, signals: ["ssh:ada"] });
  });

  it("research software left open but doing nothing is in use, yet becomes idle", () => {
    const t = new IdleTracker(rules(), T0);
    const gui = (ticks: number) => [proc(20, ["/opt/napari/bin/napari"], { cpuTicks: ticks })];
    // Appears (activity), then works hard for a minute: 30 s of CPU in 60 s = 50 %.
    t.update({ at: T0 + 1 * MIN, processes: gui(100), gpuUtilPct: 0 });
    expect(
      t.update({ at: T0 + 2 * MIN, processes: gui(3100), gpuUtilPct: 0 }).idleSince,
    ).toBeNull();
    // Then sits there: 1 tick a minute is far below 5 % of a core.
    let r = t.update({ at: T0 + 3 * MIN, processes: gui(3101), gpuUtilPct: 0 });
    for (let m = 4; m <= 13; m++)
      r = t.update({ at: T0 + m * MIN, processes: gui(3100 + m), gpuUtilPct: 0 });
    expect(r).toEqual({
      inUse: true,
      idleSince: new Date(T0 + 2 * MIN).toISOString(),
      signals: ["process:napari"],
    });
  });

  it("recent input counts; with an input source a registered but untouched CRD desktop can go idle", () => {
    const t = new IdleTracker(rules({ inputRecentMs: 5 * MIN }), T0);
    const crd = [proc(13, ["chrome-remote-desktop-host"], { comm: "chrome-remote-d" })];
    expect(
      t.update({ at: T0 + MIN, processes: crd, gpuUtilPct: 0, lastInputAt: T0 + MIN - 1000 }),
    ).toMatchObject({ inUse: true, idleSince: null });
    const late = t.update({ at: T0 + 20 * MIN, processes: crd, gpuUtilPct: 0, lastInputAt: T0 });
    expect(late).toEqual({
      inUse: true,
      idleSince: new Date(T0 + MIN).toISOString(),
      signals: ["crd:1001"],
    });
    // Without an input source the CRD host alone keeps it active.
    const t2 = new IdleTracker(rules(), T0);
    expect(t2.update({ at: T0 + 20 * MIN, processes: crd, gpuUtilPct: 0 }).idleSince).toBeNull();
  });
});

describe("with real child processes on this machine's /proc", () => {
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) c.kill("SIGKILL");
  });

  it("sees a research executable start and stop; its name as an argument is not enough", async () => {
    const dir = await tempDir();
    const sleap = join(dir, "sleap-label");
    await copyFile("/bin/sleep", sleap);
    await chmod(sleap, 0o755);
    const monitor = new HostUsageMonitor({
      rules: rules({ researchNames: ["sleap-label"], researchUid: process.getuid?.() ?? null }),
      processes: new ProcProcessLister(),
      log: silentLogger,
    });
    const gpus = {
      gpus: [],
      health: { healthy: true, reasons: [] },
      takenAt: new Date(),
      source: "none" as const,
    };

    // "sleap-label" only as an argument of sh and of sleep: not in use.
    const decoy = spawn("/bin/sh", ["-c", "sleep 30", "sleap-label"], { stdio: "ignore" });
    children.push(decoy);
    await new Promise((r) => setTimeout(r, 100));
    expect((await monitor.sample(gpus)).inUse).toBe(false);

    const real = spawn(sleap, ["30"], { stdio: "ignore" });
    children.push(real);
    await new Promise((r) => setTimeout(r, 100));
    const report = await monitor.sample(gpus);
    expect(report).toMatchObject({ inUse: true, signals: ["process:sleap-label"] });

    real.kill("SIGKILL");
    await new Promise((r) => real.once("exit", r));
    // Node has reaped it once "exit" fired, so /proc no longer lists it.
    expect(await monitor.sample(gpus)).toMatchObject({ inUse: false, signals: [] });
  });
});
