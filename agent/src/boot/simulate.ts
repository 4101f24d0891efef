import { type ChildProcess, spawn } from "node:child_process";
import { appendFile, mkdir, rename, rm, utimes, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { capLines, type StartupResultFile } from "./readiness";

export type SimulatedBootPaths = {
  procRoot: string;
  cloudInitDir: string;
  cloudInitLog: string;
  containerLog: string;
  containerReadyFile: string;
  /** Where the startup result goes (the bootstrap's format, boot/readiness.ts). */
  startupResultFile?: string;
};

/** The fleet's startup script, run for real (bash, this process's user) during the simulated boot. */
export type SimulatedStartup = {
  /** A file holding the script; null: the fleet has none. */
  script: string | null;
  onError: "fail" | "continue";
  timeoutMs: number;
  /** The VM's state dir: the script's working directory and HOME. */
  workDir: string;
};

/**
 * Runs the script like the bootstrap runs it in the research container: output (stdout and
 * stderr together) to the container log, the last lines kept for the result. A script that
 * outlives `timeoutMs` is killed and counts as failed.
 */
export function runStartupScript(
  startup: SimulatedStartup & { script: string },
  onLine: (line: string) => Promise<void>,
  track: (child: ChildProcess | null) => void = () => {},
): Promise<{ exitCode: number | null; lines: string[] }> {
  return new Promise((resolve) => {
    const lines: string[] = [];
    let pending = "";
    let writes = Promise.resolve();
    const take = (text: string, flush = false) => {
      pending += text;
      const parts = pending.split("\n");
      pending = flush ? "" : (parts.pop() ?? "");
      for (const line of parts) {
        if (flush && line === "") continue;
        lines.push(line);
        if (lines.length > 200) lines.splice(0, lines.length - 200);
        writes = writes.then(() => onLine(line)).catch(() => {});
      }
    };
    const child = spawn("bash", [startup.script], {
      cwd: startup.workDir,
      // Only what a script needs: nothing of the agent's own environment (its token file path).
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: startup.workDir, LANG: "C.UTF-8" },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    track(child);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      // The script's whole process group: a `sleep` it started must not outlive it.
      try {
        if (child.pid) process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    }, startup.timeoutMs);
    child.stdout?.setEncoding("utf8").on("data", (d: string) => take(d));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => take(d));
    const finish = (exitCode: number | null) => {
      clearTimeout(timer);
      track(null);
      take("", true);
      if (timedOut) {
        take(`lablink: startup script timed out after ${Math.round(startup.timeoutMs / 1000)} s\n`);
      }
      writes.then(() => resolve({ exitCode: timedOut ? null : exitCode, lines: capLines(lines) }));
    };
    child.on("error", (err) => {
      take(`lablink: could not run the startup script: ${err.message}\n`);
      finish(null);
    });
    child.on("close", (code) => finish(code));
  });
}

/** Writes the result file whole (rename), so a reader never sees half of it. */
export async function writeStartupResult(file: string, result: StartupResultFile): Promise<void> {
  const tmp = `${file}.tmp`;
  await writeFile(tmp, JSON.stringify(result));
  await rename(tmp, file);
}

type Step = { afterMs: number; run: () => Promise<void> };

const stamp = (d: Date) => d.toUTCString().replace("GMT", "+0000");

/**
 * A local simulated VM has no cloud-init and no research container. This plays a short boot in
 * the real file formats (status.json, result.json, cloud-init-output.log, a container log and
 * its ready marker) so the agent's real readers and tailers produce boot timings and log lines
 * for the dashboard. Time is compressed: the whole boot takes `scale` × 8 seconds.
 */
export async function simulateBoot(
  paths: SimulatedBootPaths,
  options: { scale?: number; tickMs?: number; startup?: SimulatedStartup } = {},
): Promise<{ stop: () => void }> {
  const scale = options.scale ?? 1;
  const started = new Date();
  const bootedAt = Math.floor(started.getTime() / 1000) - 2;
  // A new agent start is a new simulated boot: start from nothing.
  for (const p of [
    paths.cloudInitDir,
    paths.cloudInitLog,
    paths.containerLog,
    paths.containerReadyFile,
    ...(paths.startupResultFile ? [paths.startupResultFile] : []),
  ]) {
    await rm(p, { recursive: true, force: true });
  }
  await mkdir(paths.procRoot, { recursive: true });
  await mkdir(paths.cloudInitDir, { recursive: true });
  await mkdir(dirname(paths.cloudInitLog), { recursive: true });
  await mkdir(dirname(paths.containerLog), { recursive: true });
  await writeFile(join(paths.procRoot, "stat"), `cpu  1 0 1 100 0 0 0 0 0 0\nbtime ${bootedAt}\n`);

  const stages: Record<string, { start: number | null; finished: number | null; errors: [] }> = {
    "init-local": { start: null, finished: null, errors: [] },
    init: { start: null, finished: null, errors: [] },
    "modules-config": { start: null, finished: null, errors: [] },
    "modules-final": { start: null, finished: null, errors: [] },
  };
  let stage: string | null = null;
  const now = () => Date.now() / 1000;
  const writeStatus = () =>
    writeFile(
      join(paths.cloudInitDir, "status.json"),
      JSON.stringify({ v1: { datasource: "DataSourceNoCloud", stage, ...stages } }, null, 1),
    );
  const ci = (line: string) => appendFile(paths.cloudInitLog, `${line}\n`);
  const box = (line: string) =>
    appendFile(paths.containerLog, `${new Date().toISOString()} ${line}\n`);
  const begin = async (name: string) => {
    stage = name;
    const s = stages[name];
    if (s) s.start = now();
    await writeStatus();
    await ci(
      `Cloud-init v. 24.4 running '${name === "init" ? "init" : name}' at ${stamp(new Date())}. Up ${(now() - bootedAt).toFixed(2)} seconds.`,
    );
  };
  const end = async (name: string) => {
    const s = stages[name];
    if (s) s.finished = now();
    stage = null;
    await writeStatus();
  };

  const steps: Step[] = [
    { afterMs: 0, run: () => begin("init-local") },
    { afterMs: 300, run: () => end("init-local") },
    { afterMs: 400, run: () => begin("init") },
    {
      afterMs: 900,
      run: () => ci("ci-info: +++++++++++++++++++++++Net device info+++++++++++++++++++++++"),
    },
    { afterMs: 1200, run: () => end("init") },
    { afterMs: 1300, run: () => begin("modules-config") },
    { afterMs: 2000, run: () => end("modules-config") },
    { afterMs: 2100, run: () => begin("modules-final") },
    { afterMs: 2600, run: () => ci("Reading package lists...") },
    { afterMs: 3200, run: () => ci("Setting up lablink-research-image (simulated) ...") },
    {
      afterMs: 4000,
      run: async () => {
        await end("modules-final");
        await writeFile(
          join(paths.cloudInitDir, "result.json"),
          JSON.stringify({ v1: { datasource: "DataSourceNoCloud", errors: [] } }, null, 1),
        );
        await ci(
          `Cloud-init v. 24.4 finished at ${stamp(new Date())}. Datasource DataSourceNoCloud.  Up ${(now() - bootedAt).toFixed(2)} seconds`,
        );
      },
    },
    { afterMs: 4500, run: () => box("research container: starting (simulated image)") },
    { afterMs: 5500, run: () => box("jupyter: serving notebooks from /home/research") },
    {
      afterMs: 6500,
      run: async () => {
        const up = await runStartup();
        if (!up) return;
        await box("research container: ready");
        await writeFile(paths.containerReadyFile, "");
        const t = new Date();
        await utimes(paths.containerReadyFile, t, t);
      },
    },
  ];

  let running: ChildProcess | null = null;
  /** The fleet's startup script, then its result file; false: the container stays down. */
  const runStartup = async (): Promise<boolean> => {
    const startup = options.startup;
    const onError = startup?.onError ?? "continue";
    let result: StartupResultFile = {
      status: "none",
      exitCode: null,
      finishedAt: new Date().toISOString(),
      onError,
      container: "up",
      lastLines: [],
    };
    if (startup?.script) {
      const { exitCode, lines } = await runStartupScript(
        { ...startup, script: startup.script },
        (line) => box(line),
        (child) => {
          running = child;
        },
      );
      const ok = exitCode === 0;
      if (!ok) await box(`lablink: startup script failed (on error: ${onError})`);
      result = {
        status: ok ? "ok" : "failed",
        exitCode,
        finishedAt: new Date().toISOString(),
        onError,
        // Policy fail: the bootstrap stops the research container.
        container: !ok && onError === "fail" ? "down" : "up",
        lastLines: lines,
      };
    }
    if (paths.startupResultFile) await writeStartupResult(paths.startupResultFile, result);
    return result.container === "up";
  };

  const timers: NodeJS.Timeout[] = [];
  let chain = Promise.resolve();
  for (const step of steps) {
    const timer = setTimeout(() => {
      // In order, even when a write is slow: the files must tell one consistent story.
      chain = chain.then(step.run).catch(() => {});
    }, step.afterMs * scale);
    timer.unref();
    timers.push(timer);
  }
  // Afterwards the container keeps talking now and then, so a live tail has something to show.
  const tick = setInterval(() => {
    chain = chain.then(() => box("jupyter: kernel alive")).catch(() => {});
  }, options.tickMs ?? 20_000);
  tick.unref();
  return {
    stop: () => {
      for (const t of timers) clearTimeout(t);
      clearInterval(tick);
      const child = running as ChildProcess | null;
      if (child?.pid) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
    },
  };
}
