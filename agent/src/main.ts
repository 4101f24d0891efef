import { readFileSync } from "node:fs";
import { statfs } from "node:fs/promises";
import { hostname } from "node:os";
import { createTrpcTransport } from "./client";
import { StateDirActions } from "./commands";
import { type AgentConfig, ConfigError, loadConfig } from "./config";
import { RotatingCredential } from "./credential";
import { NvidiaSmiProbe, SimulatedProbe } from "./gpu/probe";
import { BoundedCommand } from "./gpu/query";
import { SimulatedGpus } from "./gpu/simulate";
import { createLogger } from "./log";
import { Agent } from "./loop";

/** SIGTERM must end the process within 2 s; this is the backstop if something hangs. */
const HARD_EXIT_MS = 1_800;

function agentVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
    return typeof pkg.version === "string" ? pkg.version : "unknown";
  } catch {
    return "unknown";
  }
}

async function diskFreePct(path: string): Promise<number | null> {
  const s = await statfs(path);
  if (!s.blocks) return null;
  return Math.round((s.bavail / s.blocks) * 10_000) / 100;
}

async function main(config: AgentConfig): Promise<void> {
  const log = createLogger({ level: config.logLevel, bindings: { vmId: config.vmId } });
  const version = agentVersion();
  log.info("agent starting", {
    version,
    serverUrl: config.serverUrl,
    credentialFrom: config.tokenSource,
    bootId: config.bootId,
    stateDir: config.stateDir,
    simulateGpu: config.simulateGpu,
    heartbeatOverrideS: config.heartbeatOverrideS,
  });

  process.on("unhandledRejection", (err) => log.error("unhandled rejection", { error: err }));
  process.on("uncaughtException", (err) => {
    log.error("uncaught exception; exiting", { error: err, stack: err.stack });
    process.exit(1);
  });

  const credential = new RotatingCredential(
    config.token,
    config.tokenSource === "env" ? null : config.tokenSource,
    log,
  );
  const actions = new StateDirActions(config.stateDir);
  const activeAssignments = await actions.init();

  const agent = new Agent({
    vmId: config.vmId,
    bootId: config.bootId,
    hostname: hostname().slice(0, 255) || "unknown",
    agentVersion: version,
    transport: createTrpcTransport({
      serverUrl: config.serverUrl,
      token: credential.current,
      onCredential: credential.canRotate ? credential.accept : undefined,
    }),
    createGpuSource: (inUse) =>
      config.simulateGpu
        ? new SimulatedProbe(new SimulatedGpus({ ...config.simulateGpu, vmId: config.vmId }), inUse)
        : new NvidiaSmiProbe({
            nvidiaSmi: new BoundedCommand(config.nvidiaSmi, config.nvidiaSmiTimeoutMs),
            dmesg: config.readXid ? new BoundedCommand("dmesg", 5_000) : null,
            thresholds: { gpuTempMaxC: config.gpuTempMaxC, gpuMemTempMaxC: config.gpuMemTempMaxC },
            expectedGpus: config.expectedGpus,
            xidWindowS: config.xidWindowS,
            log,
          }),
    actions,
    activeAssignments,
    log,
    heartbeatOverrideS: config.heartbeatOverrideS,
    pollWaitMs: config.pollWaitMs,
    diskFreePct: () => diskFreePct(config.stateDir),
  });

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) process.exit(0); // second Ctrl-C: don't wait
    log.info("signal received", { signal });
    agent.stop("stopped");
    setTimeout(() => process.exit(0), HARD_EXIT_MS).unref();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  // Started by a parent over IPC (the local fleet runner): die with it, never linger as an orphan.
  if (typeof process.send === "function") {
    process.on("disconnect", () => {
      agent.stop("parent-disconnected");
      setTimeout(() => process.exit(0), HARD_EXIT_MS).unref();
    });
  }

  const reason = await agent.run();
  log.info("agent stopped", { reason });
  process.exit(0);
}

let config: AgentConfig;
try {
  config = loadConfig();
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`lablink-agent: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}
await main(config);
