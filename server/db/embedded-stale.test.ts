import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isAlive, isRunning, isZombie } from "../processes";
import { startEmbeddedPostgres } from "./embedded";

/**
 * What a kill -9 of everything leaves behind: a postmaster nobody reaps (a zombie: it looks alive
 * to kill(pid, 0), so Postgres would refuse its lock files) and the socket lock file in /tmp.
 */
const cleanup: (() => void)[] = [];
afterAll(() => {
  for (const c of cleanup) c();
});

/** A zombie: a child of `sleep 30` (after exec, the shell's background job is its child). */
async function zombie(): Promise<number> {
  const parent = spawn("sh", ["-c", "sleep 0.2 & echo $!; exec sleep 30"], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  cleanup.push(() => parent.kill("SIGKILL"));
  const pid = await new Promise<number>((resolve) =>
    parent.stdout.once("data", (d: Buffer) => resolve(Number(d.toString().trim()))),
  );
  for (let i = 0; i < 50 && !isZombie(pid); i++) await new Promise((r) => setTimeout(r, 50));
  return pid;
}

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });

describe.skipIf(process.platform !== "linux")("after a kill -9", () => {
  it("tells an unreaped process from a running one", async () => {
    const pid = await zombie();
    expect(isAlive(pid)).toBe(true);
    expect(isZombie(pid)).toBe(true);
    expect(isRunning(pid)).toBe(false);
    expect(isRunning(process.pid)).toBe(true);
  });

  it("starts Postgres although a dead postmaster's socket lock names a zombie", async () => {
    const pid = await zombie();
    const port = await freePort();
    const lock = `/tmp/.s.PGSQL.${port}.lock`;
    writeFileSync(lock, `${pid}\n/tmp\n${Math.floor(Date.now() / 1000)}\n${port}\n`);
    cleanup.push(() => rmSync(lock, { force: true }));
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "lablink-stale-"));
    cleanup.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const lines: string[] = [];
    const pg = await startEmbeddedPostgres({ dataDir, port, log: (l) => lines.push(l) });
    try {
      expect(lines.join("\n")).toContain(`removing a stale Postgres socket lock for port ${port}`);
    } finally {
      await pg.stop();
    }
  }, 60_000);
});
