import { appendFile, mkdir, rm, utimes, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

export type SimulatedBootPaths = {
  procRoot: string;
  cloudInitDir: string;
  cloudInitLog: string;
  containerLog: string;
  containerReadyFile: string;
};

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
  options: { scale?: number; tickMs?: number } = {},
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
        await box("research container: ready");
        await writeFile(paths.containerReadyFile, "");
        const t = new Date();
        await utimes(paths.containerReadyFile, t, t);
      },
    },
  ];

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
    },
  };
}
