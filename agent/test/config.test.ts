import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
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
