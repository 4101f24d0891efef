import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseCli } from "../src/cli";
import { ConfigError, loadConfig } from "../src/config";
import { tempDir } from "./helpers";

const VM = "4b1d5a2e-8f3c-4c1a-9a59-2f8d1f0c7b11";
const base = {
  LABLINK_SERVER_URL: "http://127.0.0.1:3000/",
  LABLINK_AGENT_TOKEN: "lla_0123_secret",
  LABLINK_VM_ID: VM,
};

const errorOf = (env: Record<string, string>) => {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error("expected a ConfigError");
};

describe("loadConfig", () => {
  it("applies defaults", () => {
    const c = loadConfig({ ...base, LABLINK_BOOT_ID: "boot-1" });
    expect(c).toMatchObject({
      serverUrl: "http://127.0.0.1:3000",
      vmId: VM,
      bootId: "boot-1",
      simulateGpu: null,
      heartbeatOverrideS: null,
      nvidiaSmi: "nvidia-smi",
      nvidiaSmiTimeoutMs: 10_000,
      expectedGpus: null,
      gpuTempMaxC: 90,
      readXid: true,
      pollWaitMs: 25_000,
      logLevel: "info",
      tokenSource: "env",
    });
    expect(c.stateDir).toContain(`lablink-agent-${VM}`);
    expect(c.token()).toBe("lla_0123_secret");
  });

  it("never puts the token into the config object", () => {
    expect(JSON.stringify(loadConfig(base))).not.toContain("secret");
  });

  it("names each missing or bad variable", () => {
    const message = errorOf({ LABLINK_VM_ID: "not-a-uuid", LABLINK_HEARTBEAT_S: "fast" });
    expect(message).toContain("LABLINK_SERVER_URL: is required");
    expect(message).toContain("LABLINK_VM_ID: must be a UUID");
    expect(message).toContain("LABLINK_HEARTBEAT_S:");
    expect(errorOf({ ...base, LABLINK_SERVER_URL: "ftp://x" })).toContain(
      "LABLINK_SERVER_URL: must be an http(s) URL",
    );
    expect(errorOf({ ...base, LABLINK_AGENT_TOKEN: "" })).toContain(
      "LABLINK_AGENT_TOKEN: is required",
    );
    expect(errorOf({ ...base, LOG_LEVEL: "loud" })).toContain("LOG_LEVEL:");
    expect(errorOf({ ...base, LABLINK_SIMULATE_GPU: "A10G:0" })).toContain("LABLINK_SIMULATE_GPU");
  });

  it("reads the token from a file on every call (rotation)", async () => {
    const dir = await tempDir();
    const file = join(dir, "token");
    await writeFile(file, "lla_first\n");
    const c = loadConfig({ ...base, LABLINK_AGENT_TOKEN: "", LABLINK_AGENT_TOKEN_FILE: file });
    expect(c.tokenSource).toBe(file);
    expect(c.token()).toBe("lla_first");
    await writeFile(file, "lla_second\n");
    expect(c.token()).toBe("lla_second");
    expect(errorOf({ ...base, LABLINK_AGENT_TOKEN_FILE: join(dir, "missing") })).toContain(
      "LABLINK_AGENT_TOKEN_FILE: cannot read",
    );
  });

  it("parses the simulation spec and the overrides", () => {
    const c = loadConfig({
      ...base,
      LABLINK_SIMULATE_GPU: "NVIDIA A10G:4",
      LABLINK_HEARTBEAT_S: "0.5",
      LABLINK_EXPECTED_GPUS: "4",
      LABLINK_GPU_TEMP_MAX_C: "85",
      LABLINK_READ_XID: "0",
      LABLINK_STATE_DIR: "/var/lib/lablink",
      LOG_LEVEL: "debug",
    });
    expect(c).toMatchObject({
      simulateGpu: { model: "NVIDIA A10G", count: 4 },
      heartbeatOverrideS: 0.5,
      expectedGpus: 4,
      gpuTempMaxC: 85,
      readXid: false,
      stateDir: "/var/lib/lablink",
      logLevel: "debug",
    });
    expect(loadConfig({ ...base, LABLINK_SIMULATE_GPU: "Tesla T4" }).simulateGpu).toEqual({
      model: "Tesla T4",
      count: 1,
    });
  });

  it("falls back to the kernel boot id, stable within a boot", () => {
    const a = loadConfig(base).bootId;
    expect(a.length).toBeGreaterThan(0);
    expect(loadConfig(base).bootId).toBe(a);
  });
});

describe("log shipping and boot timing options", () => {
  it("defaults: ship logs, follow cloud-init's output log, no container files", () => {
    const c = loadConfig(base);
    expect(c.logs).toEqual({
      enabled: true,
      bufferLines: 2_000,
      batchLines: 200,
      flushMs: 3_000,
      maxLineChars: 4096,
      cloudInitLog: "/var/log/cloud-init-output.log",
      containerLog: null,
    });
    expect(c.boot).toMatchObject({
      cloudInitDir: "/run/cloud-init",
      containerReadyFile: null,
      procRoot: "/proc",
      simulate: false,
    });
  });

  it("reads paths, limits and 'none' from the environment; refuses bad limits", () => {
    const c = loadConfig({
      ...base,
      LABLINK_SHIP_LOGS: "0",
      LABLINK_LOG_BUFFER_LINES: "500",
      LABLINK_LOG_BATCH_LINES: "50",
      LABLINK_LOG_FLUSH_S: "0.5",
      LABLINK_CLOUD_INIT_LOG: "none",
      LABLINK_CONTAINER_LOG: "/var/log/lablink/container.log",
      LABLINK_CLOUD_INIT_DIR: "/tmp/ci",
      LABLINK_CONTAINER_READY_FILE: "/run/lablink/container-ready",
    });
    expect(c.logs).toMatchObject({
      enabled: false,
      bufferLines: 500,
      batchLines: 50,
      flushMs: 500,
      cloudInitLog: null,
      containerLog: "/var/log/lablink/container.log",
    });
    expect(c.boot).toMatchObject({
      cloudInitDir: "/tmp/ci",
      containerReadyFile: "/run/lablink/container-ready",
    });
    expect(errorOf({ ...base, LABLINK_LOG_BATCH_LINES: "501" })).toContain(
      "LABLINK_LOG_BATCH_LINES",
    );
    expect(errorOf({ ...base, LABLINK_LOG_BUFFER_LINES: "lots" })).toContain(
      "LABLINK_LOG_BUFFER_LINES",
    );
  });

  it("a simulated boot keeps every file in the state dir", () => {
    const c = loadConfig({ ...base, LABLINK_STATE_DIR: "/tmp/s", LABLINK_SIMULATE_BOOT: "1" });
    expect(c.boot.simulate).toBe(true);
    for (const p of [
      c.logs.cloudInitLog,
      c.logs.containerLog,
      c.boot.cloudInitDir,
      c.boot.procRoot,
    ]) {
      expect(p?.startsWith("/tmp/s/simulated-boot/")).toBe(true);
    }
  });

  it("command-line flags set the same options", () => {
    const cli = parseCli(
      [
        "--ship-logs",
        "0",
        "--cloud-init-log",
        "none",
        "--container-log",
        "/c.log",
        "--container-ready-file",
        "/r",
      ],
      base,
    );
    if (cli.kind !== "run") throw new Error("expected run");
    const c = loadConfig(cli.env);
    expect(c.logs).toMatchObject({ enabled: false, cloudInitLog: null, containerLog: "/c.log" });
    expect(c.boot.containerReadyFile).toBe("/r");
  });
});
