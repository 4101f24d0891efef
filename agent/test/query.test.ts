import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DEFAULT_THRESHOLDS } from "../src/gpu/health";
import { NvidiaSmiProbe } from "../src/gpu/probe";
import { BoundedCommand, GPU_QUERY_ARGS, queryGpus } from "../src/gpu/query";
import { createLogger, silentLogger } from "../src/log";
import { FIXTURES, fakeBinary, tempDir } from "./helpers";

/** A stand-in nvidia-smi that records its argv and prints a fixture with an exit code. */
async function fakeSmi(fixtureName: string, exitCode = 0) {
  const dir = await tempDir();
  const argsFile = join(dir, "args");
  const path = await fakeBinary(
    dir,
    "nvidia-smi",
    `printf '%s\\n' "$@" > '${argsFile}'\ncat '${join(FIXTURES, fixtureName)}'\nexit ${exitCode}`,
  );
  return { path, args: () => readFile(argsFile, "utf8").then((s) => s.trim().split("\n")) };
}

const probeWith = (
  smi: BoundedCommand,
  dmesg: BoundedCommand | null = null,
  expectedGpus: number | null = null,
  xidWindowS = 3600,
) =>
  new NvidiaSmiProbe({
    nvidiaSmi: smi,
    dmesg,
    thresholds: DEFAULT_THRESHOLDS,
    expectedGpus,
    xidWindowS,
    log: silentLogger,
  });

describe("running nvidia-smi (real executables, no shell)", () => {
  it("passes the query as argv and reads stdout", async () => {
    const smi = await fakeSmi("h200-load.csv");
    const outcome = await queryGpus(new BoundedCommand(smi.path, 5_000));
    expect(await smi.args()).toEqual(GPU_QUERY_ARGS);
    expect(outcome).toEqual({
      kind: "ok",
      stdout: await readFile(join(FIXTURES, "h200-load.csv"), "utf8"),
    });
  });

  it("a non-zero exit is reported with its code and output", async () => {
    const smi = await fakeSmi("error-bogus-field.txt", 2);
    const outcome = await queryGpus(new BoundedCommand(smi.path, 5_000));
    expect(outcome).toEqual({
      kind: "failed",
      exitCode: 2,
      signal: null,
      output: 'Field "bogus.field" is not a valid field to query.',
    });
  });

  it("a missing binary is ENOENT → not-found", async () => {
    const dir = await tempDir();
    expect(await queryGpus(new BoundedCommand(join(dir, "nvidia-smi"), 5_000))).toEqual({
      kind: "not-found",
    });
  });

  it("a file that is not executable is a spawn error, not a crash", async () => {
    const dir = await tempDir();
    const path = await fakeBinary(dir, "nvidia-smi", "exit 0");
    await import("node:fs/promises").then((fs) => fs.chmod(path, 0o644));
    const outcome = await queryGpus(new BoundedCommand(path, 5_000));
    expect(outcome).toMatchObject({ kind: "spawn-error", code: "EACCES" });
  });

  it("a hung nvidia-smi times out on time, even when a grandchild keeps stdout open", async () => {
    const dir = await tempDir();
    // No `exec`: sh forks sleep, which inherits stdout, so execFile's own callback would wait 3 s.
    const path = await fakeBinary(dir, "nvidia-smi", "sleep 3\necho late");
    const smi = new BoundedCommand(path, 200);
    const started = Date.now();
    expect(await queryGpus(smi)).toEqual({ kind: "timeout", stillRunning: false });
    expect(Date.now() - started).toBeLessThan(1_500);
    smi.dispose();
  });

  it("does not start a second nvidia-smi while a timed-out one has not exited yet", async () => {
    const dir = await tempDir();
    const countFile = join(dir, "starts");
    const path = await fakeBinary(dir, "nvidia-smi", `echo start >> '${countFile}'\nexec sleep 5`);
    const smi = new BoundedCommand(path, 150);
    expect(await smi.run([])).toEqual({ kind: "timeout", stillRunning: false });
    // Same tick: the SIGKILLed child has not been reaped yet (as a child stuck in the kernel
    // never would be), so no second process is started.
    expect(await smi.run([])).toEqual({ kind: "timeout", stillRunning: true });
    expect((await readFile(countFile, "utf8")).trim().split("\n")).toHaveLength(1);
    // Once it is gone, probing resumes.
    await new Promise((r) => setTimeout(r, 100));
    expect(await smi.run([])).toEqual({ kind: "timeout", stillRunning: false });
    expect((await readFile(countFile, "utf8")).trim().split("\n")).toHaveLength(2);
    smi.dispose();
  });

  it("the child gets a minimal environment: the agent token never reaches it", async () => {
    const dir = await tempDir();
    const path = await fakeBinary(dir, "nvidia-smi", "env");
    process.env.LABLINK_AGENT_TOKEN = "lla_secret_in_env";
    try {
      const outcome = await new BoundedCommand(path, 5_000).run([]);
      expect(outcome.kind).toBe("ok");
      const text = outcome.kind === "ok" ? outcome.stdout : "";
      expect(text).not.toContain("lla_secret_in_env");
      expect(text).toContain("LC_ALL=C");
    } finally {
      delete process.env.LABLINK_AGENT_TOKEN;
    }
  });
});

describe("NvidiaSmiProbe", () => {
  it("latest() says 'not probed' until the first probe, then the real verdict", async () => {
    const smi = await fakeSmi("a100-4x-ecc.csv");
    const probe = probeWith(new BoundedCommand(smi.path, 5_000), null, 4);
    expect(probe.latest().health).toEqual({
      healthy: false,
      reasons: ["GPU probe has not completed yet"],
    });
    const snapshot = await probe.refresh();
    expect(snapshot.source).toBe("nvidia-smi");
    expect(snapshot.gpus).toHaveLength(4);
    expect(snapshot.health.reasons).toEqual([
      "GPU 2: uncorrectable ECC errors: 2",
      "GPU 2: row remapping pending (GPU reset required)",
    ]);
    expect(probe.latest()).toBe(snapshot);
  });

  it("concurrent refresh() calls share one nvidia-smi run", async () => {
    const dir = await tempDir();
    const countFile = join(dir, "starts");
    const path = await fakeBinary(
      dir,
      "nvidia-smi",
      `echo start >> '${countFile}'\nsleep 0.2\ncat '${join(FIXTURES, "h200-idle.csv")}'`,
    );
    const probe = probeWith(new BoundedCommand(path, 5_000));
    const [a, b] = await Promise.all([probe.refresh(), probe.refresh()]);
    expect(a).toBe(b);
    expect((await readFile(countFile, "utf8")).trim().split("\n")).toHaveLength(1);
  });

  it("a missing driver and a hang are health failures, not exceptions", async () => {
    const dir = await tempDir();
    const missing = probeWith(new BoundedCommand(join(dir, "nope"), 5_000));
    expect((await missing.refresh()).health.reasons).toEqual([
      "no NVIDIA driver (nvidia-smi not found)",
    ]);

    const hung = await fakeBinary(dir, "nvidia-smi", "exec sleep 5");
    const probe = probeWith(new BoundedCommand(hung, 150));
    expect((await probe.refresh()).health).toEqual({
      healthy: false,
      reasons: ["nvidia-smi timed out (hung driver?)"],
    });
    probe.dispose();
  });

  it("reads Xid events from dmesg and turns hardware ones into reasons", async () => {
    const smi = await fakeSmi("h200-idle.csv");
    const dir = await tempDir();
    const dmesg = await fakeBinary(
      dir,
      "dmesg",
      [
        "cat <<'LOG'",
        "[    5.123456] nvidia: loading out-of-tree module taints kernel.",
        "[   10.000001] NVRM: Xid (PCI:0000:00:06): 13, pid=3110, name=python3, Graphics SM Warp Exception",
        "[   12.000001] NVRM: Xid (PCI:0000:00:06): 79, pid=1234, GPU has fallen off the bus.",
        "LOG",
      ].join("\n"),
    );
    // The events are 10-12 s after boot: a window of ~30 years always includes them, 0 never does.
    const recent = probeWith(
      new BoundedCommand(smi.path, 5_000),
      new BoundedCommand(dmesg, 5_000),
      null,
      1e9,
    );
    expect((await recent.refresh()).health).toEqual({
      healthy: false,
      reasons: ["Xid 79 on PCI:0000:00:06: GPU has fallen off the bus."],
    });
    const old = probeWith(
      new BoundedCommand(smi.path, 5_000),
      new BoundedCommand(dmesg, 5_000),
      null,
      0,
    );
    expect((await old.refresh()).health).toEqual({ healthy: true, reasons: [] });
  });

  it("an unreadable kernel log is noted once and then skipped", async () => {
    const smi = await fakeSmi("h200-idle.csv");
    const dir = await tempDir();
    const countFile = join(dir, "starts");
    const dmesg = await fakeBinary(
      dir,
      "dmesg",
      `echo start >> '${countFile}'\necho 'dmesg: read kernel buffer failed: Operation not permitted' >&2\nexit 1`,
    );
    const lines: string[] = [];
    const probe = new NvidiaSmiProbe({
      nvidiaSmi: new BoundedCommand(smi.path, 5_000),
      dmesg: new BoundedCommand(dmesg, 5_000),
      thresholds: DEFAULT_THRESHOLDS,
      expectedGpus: null,
      xidWindowS: 3600,
      xidEveryMs: 0,
      log: createLogger({ write: (l) => lines.push(l) }),
    });
    expect((await probe.refresh()).health.healthy).toBe(true);
    expect((await probe.refresh()).health.healthy).toBe(true);
    expect((await readFile(countFile, "utf8")).trim().split("\n")).toHaveLength(1);
    const notes = lines.map((l) => JSON.parse(l)).filter((l) => l.msg.includes("kernel log"));
    expect(notes).toHaveLength(1);
    expect(notes[0].detail).toBe("dmesg: read kernel buffer failed: Operation not permitted");
  });
});
