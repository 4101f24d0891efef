/**
 * Browser desktop relay benchmark: simulated VNC streams through the real relay
 * (server/api/desktop-relay.ts in its own process, bench/desktop-server.ts, real authorisation on
 * real Postgres) against a direct loopback WebSocket baseline in the same run.
 *
 *   npm run bench:desktop -- [--frame-kb 64] [--fps 30] [--seconds 5] [--steps 1,5,10,20,40,80]
 *                            [--pg-port 54360]
 *
 * Each desktop is a viewer socket (session cookie, Origin) and an "agent" socket (the VM's
 * token) paired by the relay, as in production; the agent side sends framebuffer-update-sized
 * messages at a fixed rate, each stamped with its send time, and the viewer side measures the
 * delay. Per-frame overhead: relay minus direct delay at one desktop. Concurrency: the largest
 * step at which every desktop still got ≥ 95 % of its frames with p95 under 100 ms.
 *
 * Exit code 0 when the first step sustained, 1 otherwise, 2 on a setup error.
 */
import { type ChildProcess, fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { cpus, loadavg } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { and, eq, isNull } from "drizzle-orm";
import { encode } from "next-auth/jwt";
import { WebSocket, WebSocketServer } from "ws";
import { issueAgentToken } from "../server/auth/agent-tokens";
import { createDatabase } from "../server/db/client";
import { desktopSessions, users } from "../server/db/schema";
import { makeFleet, makeVms } from "../tests/fixtures";
import {
  CLK_TCK_MS,
  f0,
  f1,
  machineTicks,
  percentile,
  positiveInt,
  postgresCpuMs,
  table,
  withScratchPostgres,
} from "./lib";

const SECRET = "bench-desktop-secret-0123456789abcdefghij";
const COOKIE = "authjs.session-token";
const BENCH_DB = "lablink_bench_desktop";
const P95_LIMIT_MS = 100;

function options() {
  const { values } = parseArgs({
    options: {
      "frame-kb": { type: "string" },
      fps: { type: "string" },
      seconds: { type: "string" },
      steps: { type: "string" },
      "pg-port": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(
      "usage: npm run bench:desktop -- [--frame-kb 64] [--fps 30] [--seconds 5] [--steps 1,5,10,20,40,80] [--pg-port 54360]",
    );
    process.exit(0);
  }
  return {
    frameBytes: positiveInt("frame-kb", values["frame-kb"], 64) * 1024,
    fps: positiveInt("fps", values.fps, 30),
    seconds: positiveInt("seconds", values.seconds, 5),
    steps: (values.steps ?? "1,5,10,20,40,80").split(",").map((s) => positiveInt("steps", s, 1)),
    pgPort: positiveInt("pg-port", values["pg-port"], 54360),
  };
}

type Pair = { sender: WebSocket; receiver: WebSocket; delays: number[]; received: number };

function opened(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
    ws.once("unexpected-response", (_r, res) => reject(new Error(`refused: ${res.statusCode}`)));
  });
}

function listen(pair: Pair) {
  pair.receiver.on("message", (data: Buffer) => {
    pair.received++;
    pair.delays.push(performance.now() - data.readDoubleLE(0));
  });
}

/** Every pair sends `fps` frames a second for `seconds`, start times spread over one period. */
async function stream(pairs: Pair[], o: ReturnType<typeof options>) {
  for (const p of pairs) {
    p.delays = [];
    p.received = 0;
  }
  const frame = Buffer.alloc(o.frameBytes, 0x5a);
  const period = 1000 / o.fps;
  const timers: NodeJS.Timeout[] = [];
  pairs.forEach((p, i) => {
    const start = setTimeout(
      () => {
        timers.push(
          setInterval(() => {
            const f = Buffer.from(frame);
            f.writeDoubleLE(performance.now(), 0);
            p.sender.send(f, { binary: true });
          }, period),
        );
      },
      (period * i) / pairs.length,
    );
    timers.push(start);
  });
  await new Promise((r) => setTimeout(r, o.seconds * 1000));
  for (const t of timers) clearInterval(t);
  // Frames in flight get a moment to arrive.
  await new Promise((r) => setTimeout(r, 300));
  const expected = Math.floor((o.seconds * 1000) / period);
  const all = pairs.flatMap((p) => p.delays).sort((a, b) => a - b);
  const worst = Math.min(...pairs.map((p) => p.received / expected));
  return {
    p50: percentile(all, 50),
    p95: percentile(all, 95),
    p99: percentile(all, 99),
    delivered: worst,
  };
}

function procCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) * CLK_TCK_MS;
}

function cpuWindow(serverPid: number, pgPid: number | null) {
  const b0 = process.cpuUsage();
  const s0 = procCpuMs(serverPid);
  const p0 = postgresCpuMs(pgPid);
  const m0 = machineTicks();
  const t0 = performance.now();
  return () => {
    const wall = performance.now() - t0;
    const b = process.cpuUsage(b0);
    const bench = (b.user + b.system) / 1000;
    const server = procCpuMs(serverPid) - s0;
    const pg1 = postgresCpuMs(pgPid);
    const pg = p0 !== null && pg1 !== null ? pg1 - p0 : 0;
    const m1 = machineTicks();
    const machine = m0 && m1 ? (m1.busy - m0.busy) * CLK_TCK_MS : Number.NaN;
    const pct = (ms: number) => (100 * ms) / wall;
    return {
      server: pct(server),
      bench: pct(bench),
      other: pct(Math.max(0, machine - server - bench - pg)),
    };
  };
}

async function startServer(databaseUrl: string): Promise<{ child: ChildProcess; port: number }> {
  const child = fork(path.resolve(import.meta.dirname, "desktop-server.ts"), [], {
    execArgv: ["--import", "tsx"],
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      AUTH_SECRET: SECRET,
      LOG_LEVEL: "warn",
      NODE_ENV: "production",
    },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`bench server exited with ${code}`)));
    child.on("message", (m: { type?: string; port?: number }) => {
      if (m.type === "ready" && m.port) resolve(m.port);
    });
  });
  return { child, port };
}

async function main() {
  const o = options();
  let server: ChildProcess | null = null;
  const exit = await withScratchPostgres(
    {
      dataDir: ".data/bench-desktop",
      port: o.pgPort,
      beforeCleanup: async () => {
        server?.kill("SIGTERM");
      },
    },
    async (pg) => {
      const url = await pg.freshDatabase(BENCH_DB, { migrate: true });
      const { db, sql } = createDatabase(url, { max: 4 });
      const max = Math.max(...o.steps);
      // One VM per desktop, each held by its own researcher, with an agent that speaks protocol 4.
      const fleet = await makeFleet(db, { gpuCount: 0 });
      const people = await db
        .insert(users)
        .values(
          Array.from({ length: max }, (_, i) => ({
            name: `viewer ${i}`,
            email: `viewer-${i}-${randomUUID().slice(0, 6)}@bench.example`,
          })),
        )
        .returning({ id: users.id });
      const machines: { vm: { id: string }; token: string; cookie: string; i: number }[] = [];
      for (const [i, person] of people.entries()) {
        const [vm] = await makeVms(db, fleet, 1, "claimed", {
          holderId: person.id,
          assignmentId: randomUUID(),
          agentProtocolVersion: 4,
          claimedAt: new Date(),
        });
        if (!vm) throw new Error("no VM");
        machines.push({
          vm,
          token: await issueAgentToken(db, vm.id),
          cookie: `${COOKIE}=${await encode({ token: { sub: person.id }, secret: SECRET, salt: COOKIE })}`,
          i,
        });
      }
      const started = await startServer(url);
      server = started.child;
      const base = `ws://127.0.0.1:${started.port}`;
      const origin = `http://127.0.0.1:${started.port}`;

      async function openRelay(m: {
        vm: { id: string };
        token: string;
        cookie: string;
      }): Promise<Pair> {
        const viewer = new WebSocket(`${base}/api/desktop/${m.vm.id}/ws`, {
          headers: { cookie: m.cookie, origin },
          perMessageDeflate: false,
        });
        const viewerOpen = opened(viewer);
        let relayId: string | undefined;
        for (let tries = 0; !relayId && tries < 1000; tries++) {
          const [row] = await db
            .select({ id: desktopSessions.id })
            .from(desktopSessions)
            .where(
              and(
                eq(desktopSessions.vmId, m.vm.id),
                isNull(desktopSessions.connectedAt),
                isNull(desktopSessions.closedAt),
              ),
            );
          relayId = row?.id;
          if (!relayId) await new Promise((r) => setTimeout(r, 5));
        }
        if (!relayId) throw new Error("the relay never appeared");
        const agent = new WebSocket(`${base}/api/agent/desktop/${relayId}`, {
          headers: { authorization: `Bearer ${m.token}` },
          perMessageDeflate: false,
        });
        await Promise.all([viewerOpen, opened(agent)]);
        const pair: Pair = { sender: agent, receiver: viewer, delays: [], received: 0 };
        listen(pair);
        return pair;
      }

      // Direct loopback baseline: the same frames over one WebSocket, no relay in between.
      const direct = new WebSocketServer({ port: 0, host: "127.0.0.1", perMessageDeflate: false });
      await new Promise((r) => direct.once("listening", r));
      const directPort = (direct.address() as AddressInfo).port;
      const accepted = new Promise<WebSocket>((r) => direct.once("connection", r));
      const directSender = new WebSocket(`ws://127.0.0.1:${directPort}`, {
        perMessageDeflate: false,
      });
      await opened(directSender);
      const directPair: Pair = {
        sender: directSender,
        receiver: await accepted,
        delays: [],
        received: 0,
      };
      listen(directPair);

      console.log(
        `desktop relay: ${o.frameBytes / 1024} KiB frames at ${o.fps} fps per desktop, ${o.seconds} s per step; ${cpus().length} CPUs, Node ${process.version}, load average ${loadavg()
          .map((l) => l.toFixed(2))
          .join(" ")}`,
      );
      const baseline = await stream([directPair], o);
      console.log(
        `direct loopback (1 stream): p50 ${f1(baseline.p50 * 1000)} µs, p95 ${f1(baseline.p95 * 1000)} µs`,
      );
      const rows: string[][] = [];
      const pairs: Pair[] = [];
      let best = 0;
      let firstOk = false;
      for (const n of o.steps) {
        while (pairs.length < n) {
          const m = machines[pairs.length];
          if (!m) break;
          pairs.push(await openRelay(m));
        }
        const cpu = cpuWindow(started.child.pid as number, pg.postmasterPid);
        const r = await stream(pairs, o);
        const c = cpu();
        const ok = r.delivered >= 0.95 && r.p95 <= P95_LIMIT_MS;
        if (n === o.steps[0]) firstOk = ok;
        if (ok) best = n;
        rows.push([
          String(n),
          f0((n * o.fps * o.frameBytes) / 1024 / 1024),
          f1(r.p50 * 1000),
          f1(r.p95 * 1000),
          f1(r.p99 * 1000),
          `${f0(r.delivered * 100)}%`,
          f0(c.server),
          f0(c.bench),
          f0(c.other),
          ok ? "yes" : "no",
        ]);
        if (n === o.steps[0]) {
          console.log(
            `per-frame relay overhead (1 desktop): p50 ${f1((r.p50 - baseline.p50) * 1000)} µs, p95 ${f1((r.p95 - baseline.p95) * 1000)} µs`,
          );
        }
        if (!ok) break;
      }
      console.log(
        table(
          [
            "desktops",
            "MiB/s",
            "p50 µs",
            "p95 µs",
            "p99 µs",
            "frames (worst)",
            "server %cpu",
            "bench %cpu",
            "other %cpu",
            "sustained",
          ],
          rows,
        ),
      );
      console.log(
        `one web process relayed ${best} concurrent desktop(s) at ${o.fps} fps × ${o.frameBytes / 1024} KiB (p95 ≤ ${P95_LIMIT_MS} ms, ≥ 95 % of frames)`,
      );
      for (const p of pairs) {
        p.sender.terminate();
        p.receiver.terminate();
      }
      directSender.terminate();
      direct.close();
      await sql.end({ timeout: 2 });
      return firstOk ? 0 : 1;
    },
  );
  process.exit(exit);
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
