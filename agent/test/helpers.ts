import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach } from "vitest";

export const FIXTURES = join(import.meta.dirname, "fixtures", "nvidia-smi");

export const fixture = (name: string) => readFile(join(FIXTURES, name), "utf8");

const dirs: string[] = [];

/** A fresh temp folder, removed after the test. */
export async function tempDir(prefix = "lablink-agent-test-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** Writes an executable /bin/sh script (a stand-in for nvidia-smi or dmesg) and returns its path. */
export async function fakeBinary(dir: string, name: string, body: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

/** Polls `check` until it returns true (or throws after `timeoutMs`). */
export async function eventually(check: () => boolean, timeoutMs = 3_000, what = "condition") {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
