import { execFile, spawn } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { startContractServer } from "./contract-server";
import { eventually, tempDir } from "./helpers";

const run = promisify(execFile);
const AGENT_DIR = join(import.meta.dirname, "..");
const VM = "4b1d5a2e-8f3c-4c1a-9a59-2f8d1f0c7b11";
const TOKEN = "lla_00000000000000000000000000000001_bundle";

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("the single-file bundle (npm run build -w agent)", () => {
  it("runs with plain node, outside the repository: --help, --version, a bad flag, a real session", async () => {
    const dir = await tempDir();
    const bundle = join(dir, "lablink-agent.mjs");
    await run(process.execPath, [join(AGENT_DIR, "scripts", "build.mjs"), bundle]);
    const env = { PATH: process.env.PATH ?? "/usr/bin:/bin" };

    const help = await run(process.execPath, [bundle, "--help"], { cwd: dir, env });
    expect(help.stdout).toMatch(/^Usage: lablink-agent/);
    const version = await run(process.execPath, [bundle, "--version"], { cwd: dir, env });
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const bad = await run(process.execPath, [bundle, "--bogus"], { cwd: dir, env }).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect(bad).toMatchObject({
      code: 2,
      stderr: expect.stringContaining("Unknown option '--bogus'"),
    });

    const server = await startContractServer({ token: TOKEN });
    cleanups.push(server.close);
    const child = spawn(
      process.execPath,
      [bundle, "--server", server.url, "--vm-id", VM, "--state-dir", join(dir, "state")],
      {
        cwd: dir,
        env: {
          ...env,
          LABLINK_AGENT_TOKEN: TOKEN,
          LABLINK_SIMULATE_GPU: "NVIDIA T4:1",
          LABLINK_HEARTBEAT_S: "0.2",
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    cleanups.push(() => child.kill("SIGKILL"));
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    await eventually(
      () => server.state.heartbeats.length >= 1,
      15_000,
      "a heartbeat from the bundle",
    );
    expect(server.state.registers[0]).toMatchObject({
      vmId: VM,
      agentVersion: version.stdout.trim(),
    });
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    // The last word to the server before exiting: "shutting down".
    expect(server.state.heartbeats.at(-1)?.shuttingDown).toBe(true);
  });
});
