import { readFileSync } from "node:fs";
import { mkdir, statfs } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { UnixAccounts } from "./accounts";
import { ReadinessSource } from "./boot/readiness";
import { simulateBoot } from "./boot/simulate";
import { BootTimingsSource } from "./boot/timings";
import { parseCli, USAGE } from "./cli";
import { createTrpcTransport } from "./client";
import { type AgentConfig, ConfigError, loadConfig } from "./config";
import { RotatingCredential, restrictTokenFile } from "./credential";
import { DesktopHost } from "./desktop/host";
import { DesktopUsage } from "./desktop/usage";
import { enrollThenRun } from "./enrollment";
import { NvidiaSmiProbe, SimulatedProbe } from "./gpu/probe";
import { BoundedCommand } from "./gpu/query";
import { SimulatedGpus } from "./gpu/simulate";
import { HostActions, lookupUser, type ResearchUser } from "./host-actions";
import { createLogger } from "./log";
import { LogShipper } from "./logs/shipper";
import { agentLogTap, tailFiles } from "./logs/sources";
import { Agent, type AgentTransport, REBOOT_EXIT_CODE, TransportError } from "./loop";
import { ResearchContainer } from "./research-container";
import { AssignedUsageSource, HostUsageMonitor, type UsageSource } from "./usage/monitor";
import { ProcProcessLister } from "./usage/processes";

/** SIGTERM must end the process within 2 s; this is the backstop if something hangs. */
const HARD_EXIT_MS = 1_800;

/**
 * What SIGTERM and SIGINT do. Installed before anything else runs: until the loop is running
 * (enrolling, starting up) there is nothing to report, so a stop (systemd, a reboot) just ends the
 * process cleanly with 0, instead of the default signal death; main() takes over once it can tell
 * the server "shutting down".
 */
let onStopSignal: (signal: NodeJS.Signals) => void = () => process.exit(0);
process.on("SIGTERM", (signal) => onStopSignal(signal));
process.on("SIGINT", (signal) => onStopSignal(signal));

/** Inlined by esbuild in the bundle, so a lone lablink-agent.mjs still knows its version. */
function agentVersion(): string {
  return typeof pkg.version === "string" ? pkg.version : "unknown";
}

async function diskFreePct(path: string): Promise<number | null> {
  const s = await statfs(path);
  if (!s.blocks) return null;
  return Math.round((s.bavail / s.blocks) * 10_000) / 100;
}

async function main(config: AgentConfig): Promise<void> {
  const startedAt = new Date();
  // Lines are shipped by their own loop; the transport is built below, so the sink is late-bound.
  let transport: AgentTransport | null = null;
  // The shipper reports its own trouble to stdout only: a log line about failing to ship log
  // lines must not itself be queued for shipping.
  const stdoutOnly = createLogger({ level: config.logLevel, bindings: { vmId: config.vmId } });
  const shipper = config.logs.enabled
    ? new LogShipper({
        vmId: config.vmId,
        bootId: config.bootId,
        send: async (input, signal) => {
          if (!transport?.logs) throw new TransportError("unavailable", "not connected yet");
          return transport.logs(input, signal);
        },
        maxBuffered: config.logs.bufferLines,
        batchLines: config.logs.batchLines,
        flushMs: config.logs.flushMs,
        maxLineChars: config.logs.maxLineChars,
        log: stdoutOnly,
      })
    : null;
  const log = createLogger({
    level: config.logLevel,
    bindings: { vmId: config.vmId },
    ...(shipper ? { tap: agentLogTap(shipper) } : {}),
  });
  const simulated = config.boot.simulate
    ? await simulateBoot(
        {
          procRoot: config.boot.procRoot,
          cloudInitDir: config.boot.cloudInitDir,
          cloudInitLog: config.logs.cloudInitLog ?? join(config.stateDir, "cloud-init-output.log"),
          containerLog: config.logs.containerLog ?? join(config.stateDir, "container.log"),
          containerReadyFile:
            config.boot.containerReadyFile ?? join(config.stateDir, "container-ready"),
          ...(config.boot.startupResultFile
            ? { startupResultFile: config.boot.startupResultFile }
            : {}),
        },
        {
          startup: { ...config.boot.simulatedStartup, workDir: config.stateDir },
        },
      )
    : null;
  if (shipper) await mkdir(config.stateDir, { recursive: true });
  const tails = shipper
    ? tailFiles({
        shipper,
        files: [
          { source: "cloud-init", path: config.logs.cloudInitLog },
          { source: "container", path: config.logs.containerLog },
        ],
        maxLineChars: config.logs.maxLineChars,
        positionsFile: join(config.stateDir, "log-positions.json"),
        log: stdoutOnly,
      })
    : null;
  const bootTimings = new BootTimingsSource(
    {
      procRoot: config.boot.procRoot,
      cloudInitDir: config.boot.cloudInitDir,
      containerReadyFile: config.boot.containerReadyFile,
    },
    startedAt,
  );
  // Only a VM with a research container (its ready marker configured) reports readiness; any
  // other (bring-your-own machines) is ready once registered, as before.
  const readiness = config.boot.containerReadyFile
    ? new ReadinessSource({
        containerReadyFile: config.boot.containerReadyFile,
        startupResultFile: config.boot.startupResultFile,
      })
    : null;
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

  if (config.tokenSource !== "env") {
    // The token is the VM's identity: readable by the agent's user (root on cloud VMs) only.
    const changed = restrictTokenFile(config.tokenSource);
    if (changed) {
      log.warn("token file was readable by others; made it owner-only (0600)", {
        file: config.tokenSource,
        mode: changed.from.toString(8),
      });
    }
  }
  const credential = new RotatingCredential(
    config.token,
    config.tokenSource === "env" ? null : config.tokenSource,
    log,
  );
  let user: ResearchUser | null = null;
  if (config.researchUser) {
    const found = lookupUser(config.researchUser, readFileSync("/etc/passwd", "utf8"));
    if (!found)
      throw new ConfigError(`LABLINK_RESEARCH_USER: no local user "${config.researchUser}"`);
    user = { ...found, home: config.researchHome ?? found.home };
  }
  const processes = new ProcProcessLister(config.procRoot);
  let accounts: UnixAccounts | null = null;
  if (config.researchAccounts === "per-assignment") {
    if (!(await UnixAccounts.available())) {
      throw new ConfigError(
        "LABLINK_RESEARCH_ACCOUNTS=per-assignment: the agent must run as root with useradd and userdel",
      );
    }
    accounts = new UnixAccounts({ stateDir: config.stateDir, processes, log });
  }
  const host = hostname().slice(0, 255) || "unknown";
  const desktop =
    config.desktop.mode === "off"
      ? null
      : new DesktopHost({
          mode: config.desktop.mode,
          geometry: config.desktop.geometry,
          typingFile: config.desktop.typingFile,
          log,
        });
  const actions = new HostActions({
    stateDir: config.stateDir,
    user,
    simulatedHome: config.researchHome ?? join(config.stateDir, "research-home"),
    crd: {
      startHost: config.crd.startHost,
      hostName: config.crd.hostName ?? host.replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 64),
      redirectUrl: config.crd.redirectUrl,
    },
    files: config.wipe.files,
    killProcesses: config.wipe.killProcesses && user !== null,
    processes,
    accounts,
    container: config.researchContainer ? new ResearchContainer(config.researchContainer) : null,
    desktop,
    log,
  });
  const activeAssignments = await actions.init();
  let assigned = () => activeAssignments.length > 0;
  // Simulated VMs have no real sessions: "in use" means "assigned", as the simulated GPU shows.
  const hostUsage: UsageSource = config.simulateGpu
    ? new AssignedUsageSource(() => assigned(), config.usage.idleAfterS * 1000)
    : new HostUsageMonitor({
        rules: {
          researchNames: config.usage.researchNames,
          researchPattern: config.usage.researchPattern,
          researchUid: user?.uid ?? null,
          researchUser: user?.name ?? null,
          gpuBusyPct: config.usage.gpuBusyPct,
          cpuBusyPct: config.usage.cpuBusyPct,
          inputRecentMs: config.usage.inputRecentS * 1000,
          idleAfterMs: config.usage.idleAfterS * 1000,
        },
        processes,
        inputIdle: config.usage.inputIdleCommand
          ? {
              command: new BoundedCommand(config.usage.inputIdleCommand[0] ?? "", 2_000),
              args: config.usage.inputIdleCommand.slice(1),
            }
          : null,
        log,
      });
  // A connected desktop viewer is someone working on the VM.
  const usage: UsageSource = desktop
    ? new DesktopUsage(hostUsage, () => desktop.viewers, config.usage.idleAfterS * 1000)
    : hostUsage;

  transport = createTrpcTransport({
    serverUrl: config.serverUrl,
    token: credential.current,
    onCredential: credential.canRotate ? credential.accept : undefined,
  });
  shipper?.start();
  const agent = new Agent({
    vmId: config.vmId,
    bootId: config.bootId,
    hostname: host,
    agentVersion: version,
    transport,
    bootTimings,
    ...(readiness ? { readiness } : {}),
    createGpuSource: (inUse) =>
      config.simulateGpu
        ? new SimulatedProbe(
            new SimulatedGpus({ ...config.simulateGpu, vmId: config.vmId }),
            inUse,
            [join(config.stateDir, "gpu-fault"), join(config.stateDir, "gpu-fault.persistent")],
          )
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
    usage,
    log,
    heartbeatOverrideS: config.heartbeatOverrideS,
    pollWaitMs: config.pollWaitMs,
    diskFreePct: () => diskFreePct(config.stateDir),
    ...(desktop
      ? {
          onDesktop: (command: { relayId: string; assignmentId: string }) => {
            void desktop
              .relay({
                relayId: command.relayId,
                assignmentId: command.assignmentId,
                serverUrl: config.serverUrl,
                token: credential.current,
                account: () => actions.desktopAccount(command.assignmentId),
              })
              .catch((err: unknown) =>
                log.warn("desktop relay failed", {
                  relayId: command.relayId,
                  error: err instanceof Error ? err.message : String(err),
                }),
              );
          },
        }
      : {}),
  });

  assigned = () => agent.usage().inUse;

  let signals = 0;
  onStopSignal = (signal) => {
    signals += 1;
    if (signals > 1) process.exit(0); // second Ctrl-C: don't wait
    log.info("signal received", { signal });
    agent.stop("stopped");
    setTimeout(() => process.exit(0), HARD_EXIT_MS).unref();
  };
  // Started by a parent over IPC (the local fleet runner): die with it, never linger as an orphan.
  if (typeof process.send === "function") {
    process.on("disconnect", () => {
      agent.stop("parent-disconnected");
      setTimeout(() => process.exit(0), HARD_EXIT_MS).unref();
    });
  }

  const reason = await agent.run();
  log.info("agent stopped", { reason });
  simulated?.stop();
  await tails?.stop();
  // SIGTERM must end the process within 2 s: the last lines get a short deadline.
  await shipper?.stop(400);
  if (reason === "reboot") process.exit(await reboot(config.reboot));
  process.exit(0);
}

/**
 * Carries out a warm reboot: the machine's own reboot, or (local fleet) an exit that tells the
 * parent to start this agent again as a new boot.
 */
async function reboot(how: AgentConfig["reboot"]): Promise<number> {
  if (how === "exit") return REBOOT_EXIT_CODE;
  if (how === "refuse") return 0;
  const { spawn } = await import("node:child_process");
  // Fixed argv, no shell. If it fails, systemd restarts the agent and recovery escalates.
  return new Promise((resolve) => {
    const child = spawn("systemctl", ["reboot"], { stdio: "ignore" });
    child.on("error", () => resolve(1));
    child.on("exit", (code) => resolve(code === 0 ? 0 : 1));
  });
}

let config: AgentConfig;
try {
  const cli = parseCli(process.argv.slice(2), process.env);
  if (cli.kind === "help") {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (cli.kind === "version") {
    process.stdout.write(`${agentVersion()}\n`);
    process.exit(0);
  }
  let env = cli.env;
  if (env.LABLINK_ENROLLMENT_TOKEN) {
    const enrolled = await enrollThenRun(env);
    if (enrolled.code !== 0) process.exit(enrolled.code);
    env = enrolled.env ?? env;
  }
  config = loadConfig(env);
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`lablink-agent: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}
try {
  await main(config);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`lablink-agent: ${err.message}\n`);
  process.exit(2);
}
