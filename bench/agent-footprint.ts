/**
 * Agent footprint benchmark: memory and CPU of the bundled agent (agent/dist/lablink-agent.mjs,
 * what runs on a VM) talking to the real router on real Postgres, and the GPU probe's duration.
 *
 *   npm run bench:agent -- [--seconds 60] [--heartbeat 15] [--nvidia-smi PATH]
 *
 * Targets (issue #5): RSS < 60 MB, < 1 % of a core between probes, probe < 250 ms.
 *
 * 1. Starts embedded Postgres (.data/bench-agent, port 54379), applies the migrations, serves the
 *    real tRPC router over HTTP (tests/http.ts: the production router, Node's HTTP server instead
 *    of Next), and creates a fleet, a VM and its agent token.
 * 2. Builds the agent bundle and runs it with plain `node`, once with no flags and once with the
 *    flags of the systemd unit (agent/packaging/lablink-agent.service), each for `--seconds`,
 *    heartbeating every `--heartbeat` seconds. nvidia-smi is a stand-in that prints a real H200
 *    reading (agent/test/fixtures/nvidia-smi/h200-load.csv) unless `--nvidia-smi` names a real one.
 * 3. Samples /proc/<pid>/status (VmRSS, RssAnon) and smaps_rollup (Pss) every second after a
 *    10 s warm-up, and the agent's own CPU time (utime + stime; nvidia-smi's time is its own
 *    process's) over the window.
 * 4. Baseline in the same run: a bare `node -e 'setInterval(() => {}, 1000)'` with the same flags,
 *    sampled the same way: the floor of any Node process on this machine.
 * 5. Probe duration: the agent's nvidia-smi query + parse + verdict, 20 times, in this process.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { eq } from "drizzle-orm";
import { DEFAULT_THRESHOLDS } from "../agent/src/gpu/health";
import { assessGpuQuery } from "../agent/src/gpu/probe";
import { BoundedCommand, queryGpus } from "../agent/src/gpu/query";
import { issueAgentToken } from "../server/auth/agent-tokens";
import { createDatabase } from "../server/db/client";
import { startEmbeddedPostgres } from "../server/db/embedded";
import { runMigrations } from "../server/db/migrate";
import { fleets, vms } from "../server/db/schema";
import { SHUTTING_DOWN } from "../server/domain/agents";
import { startApiServer } from "../tests/http";

const root = path.resolve(import.meta.dirname, "..");
const { values } = parseArgs({
  options: {
    seconds: { type: "string" },
    heartbeat: { type: "string" },
    "nvidia-smi": { type: "string" },
  },
});
const SECONDS = Number(values.seconds ?? 60);
const HEARTBEAT_S = Number(values.heartbeat ?? 15);
const WARMUP_S = 10;
const UNIT_FLAGS = unitFlags();
const HZ = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;

/** The node flags of the systemd unit's ExecStart, so the bench measures what is deployed. */
function unitFlags(): string[] {
  const unit = readFileSync(path.join(root, "agent/packaging/lablink-agent.service"), "utf8");
  const line = unit.split("\n").find((l) => l.startsWith("ExecStart="));
  return (line ?? "").split(/\s+/).filter((a) => a.startsWith("--"));
}

type Sample = { rssKb: number; anonKb: number; pssKb: number };

function sample(pid: number): Sample {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (text: string, name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? Number.NaN);
  let pssKb = Number.NaN;
  try {
    pssKb = field(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"), "Pss");
  } catch {
    // Older kernels: no smaps_rollup.
  }
  return { rssKb: field(status, "VmRSS"), anonKb: field(status, "RssAnon"), pssKb };
}

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function measure(child: ChildProcess, label: string) {
  const pid = child.pid as number;
  await sleep(WARMUP_S * 1000);
  const ticks0 = cpuTicks(pid);
  const t0 = performance.now();
  const samples: Sample[] = [];
  for (let i = 0; i < SECONDS; i++) {
    if (child.exitCode !== null) throw new Error(`${label} exited (${child.exitCode})`);
    samples.push(sample(pid));
    await sleep(1000);
  }
  const cpuPct = ((cpuTicks(pid) - ticks0) / HZ / ((performance.now() - t0) / 1000)) * 100;
  child.kill("SIGTERM");
  await new Promise((r) => child.once("exit", r));
  const mb = (kb: number) => kb / 1024;
  const stat = (k: keyof Sample) => {
    const xs = samples.map((s) => s[k]).filter((x) => Number.isFinite(x));
    return { avg: mb(xs.reduce((a, b) => a + b, 0) / xs.length), max: mb(Math.max(...xs)) };
  };
  return { label, rss: stat("rssKb"), anon: stat("anonKb"), pss: stat("pssKb"), cpuPct };
}

type Measured = Awaited<ReturnType<typeof measure>>;

async function probeTimes(nvidiaSmi: string) {
  const command = new BoundedCommand(nvidiaSmi, 10_000);
  const ms: number[] = [];
  let healthy = false;
  for (let i = 0; i < 21; i++) {
    const t0 = performance.now();
    const outcome = await queryGpus(command);
    const verdict = assessGpuQuery(outcome, {
      thresholds: DEFAULT_THRESHOLDS,
      expectedGpus: null,
      extraReasons: [],
    });
    if (i > 0) ms.push(performance.now() - t0); // the first run warms the page cache
    healthy = verdict.health.healthy && verdict.gpus.length > 0;
  }
  command.dispose();
  ms.sort((a, b) => a - b);
  return { p50: ms[Math.floor(ms.length / 2)] ?? 0, max: ms.at(-1) ?? 0, healthy };
}

async function main() {
  const work = mkdtempSync(path.join(os.tmpdir(), "lablink-bench-agent-"));
  let nvidiaSmi = values["nvidia-smi"];
  if (!nvidiaSmi) {
    nvidiaSmi = path.join(work, "nvidia-smi");
    const fixture = path.join(root, "agent/test/fixtures/nvidia-smi/h200-load.csv");
    writeFileSync(nvidiaSmi, `#!/bin/sh\ncat '${fixture}'\n`);
    chmodSync(nvidiaSmi, 0o755);
  }

  process.stdout.write("building the agent bundle…\n");
  execFileSync(process.execPath, [path.join(root, "agent/scripts/build.mjs")], { stdio: "ignore" });
  const bundle = path.join(root, "agent/dist/lablink-agent.mjs");

  mkdirSync(path.join(root, ".data"), { recursive: true });
  const pg = await startEmbeddedPostgres({ dataDir: ".data/bench-agent", port: 54379 });
  await runMigrations(pg.url);
  const { db, sql } = createDatabase(pg.url);
  const server = await startApiServer(db, sql, HEARTBEAT_S);
  const children: ChildProcess[] = [];
  try {
    await db.delete(vms);
    await db.delete(fleets);
    const [fleet] = await db
      .insert(fleets)
      .values({
        name: "bench-agent",
        driver: "byo",
        instanceType: "p5e.48xlarge",
        status: "active",
      })
      .returning();
    if (!fleet) throw new Error("no fleet");

    const runs: { baseline: Measured; agent: Measured }[] = [];
    for (const [label, flags] of [
      ["node (no flags)", [] as string[]],
      [`node ${UNIT_FLAGS.join(" ")}`, UNIT_FLAGS],
    ] as const) {
      const [vm] = await db
        .insert(vms)
        .values({ fleetId: fleet.id, name: `bench-${runs.length}`, state: "booting" })
        .returning();
      if (!vm) throw new Error("no vm");
      const stateDir = path.join(work, `state-${runs.length}`);
      mkdirSync(stateDir, { recursive: true });
      const tokenFile = path.join(stateDir, "agent.token");
      writeFileSync(tokenFile, `${await issueAgentToken(db, vm.id)}\n`, { mode: 0o600 });

      const baseline = spawn(process.execPath, [...flags, "-e", "setInterval(() => {}, 1000)"], {
        stdio: "ignore",
      });
      children.push(baseline);
      const agent = spawn(process.execPath, [...flags, bundle], {
        env: {
          PATH: process.env.PATH,
          NODE_ENV: "production",
          LABLINK_SERVER_URL: server.url,
          LABLINK_VM_ID: vm.id,
          LABLINK_AGENT_TOKEN_FILE: tokenFile,
          LABLINK_STATE_DIR: stateDir,
          LABLINK_NVIDIA_SMI: nvidiaSmi,
          LABLINK_HEARTBEAT_S: String(HEARTBEAT_S),
          LOG_LEVEL: "warn",
        },
        stdio: ["ignore", "ignore", "inherit"],
      });
      children.push(agent);
      process.stdout.write(`measuring ${label} for ${WARMUP_S + SECONDS} s…\n`);
      const [b, a] = await Promise.all([
        measure(baseline, `bare ${label}`),
        measure(agent, `agent, ${label}`),
      ]);
      const [row] = await db.select().from(vms).where(eq(vms.id, vm.id));
      // Stopped with SIGTERM, the agent's last word is "shutting down": that must be the only
      // reason the VM is not healthy, or the probe did not read the H200 as healthy.
      const reasons = row?.healthReasons ?? [];
      if (!row?.lastHeartbeatAt || reasons.length !== 1 || reasons[0] !== SHUTTING_DOWN) {
        throw new Error(`the agent did not heartbeat a healthy VM: ${JSON.stringify(reasons)}`);
      }
      runs.push({ baseline: b, agent: a });
    }

    const probe = await probeTimes(nvidiaSmi);
    const f = (n: number) => n.toFixed(1).padStart(6);
    process.stdout.write(
      `\nagent footprint (${SECONDS} s after ${WARMUP_S} s warm-up, heartbeat ${HEARTBEAT_S} s, ` +
        `node ${process.version}, ${os.cpus().length} cores)\n` +
        "                                          RSS avg  RSS max  anon avg  PSS avg   CPU %\n",
    );
    for (const { baseline, agent } of runs) {
      for (const r of [baseline, agent]) {
        process.stdout.write(
          `${r.label.padEnd(40)} ${f(r.rss.avg)}   ${f(r.rss.max)}   ${f(r.anon.avg)}   ${f(r.pss.avg)}  ${r.cpuPct.toFixed(2).padStart(6)}\n`,
        );
      }
      process.stdout.write(
        `${"  ratio agent / bare node (RSS avg)".padEnd(40)} ${(agent.rss.avg / baseline.rss.avg).toFixed(2).padStart(6)}   ` +
          `agent over bare node: +${(agent.rss.avg - baseline.rss.avg).toFixed(1)} MB\n`,
      );
    }
    process.stdout.write(
      `\nprobe (nvidia-smi query + parse + verdict, 20 runs, ${values["nvidia-smi"] ? nvidiaSmi : "stand-in replaying a real H200 reading"}): ` +
        `p50 ${probe.p50.toFixed(1)} ms, max ${probe.max.toFixed(1)} ms, healthy ${probe.healthy}\n` +
        "targets: RSS < 60 MB, CPU < 1 % of a core, probe < 250 ms (MB = MiB)\n",
    );
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    await server.close();
    await sql.end({ timeout: 2 });
    await pg.stop();
  }
  if (!existsSync(bundle)) process.exitCode = 1;
}

await main();
