import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_REDIRECT_URL, DEFAULT_START_HOST } from "./handoff/crd";
import { type FilePolicy, safeRelativePath } from "./host-actions";
import { LOG_LEVELS, type LogLevel } from "./log";
import { LOG_BATCH_MAX, LOG_LINE_MAX } from "./logs/shipper";
import { DOCKER_NAME } from "./research-container";
import * as z from "./zod";

/**
 * The only module that reads `process.env`. Everything else takes the parsed `AgentConfig`.
 * The token is not a field: `token()` reads it on every request so a rotated token file is picked up
 * without a restart, and a config object that ends up in a log line carries no secret.
 */
export type AgentConfig = {
  serverUrl: string;
  token: () => string;
  /** Where the token comes from, for log lines ("env" or the file path); never the token. */
  tokenSource: string;
  vmId: string;
  bootId: string;
  /** LABLINK_REBOOT: how a warm-reboot command is carried out. */
  reboot: "system" | "exit" | "refuse";
  /** Set from LABLINK_SIMULATE_GPU ("NVIDIA A10G:4"): fake readings instead of nvidia-smi. */
  simulateGpu: { model: string; count: number } | null;
  /** Overrides the server's heartbeatIntervalS when set (tests, local fleet). */
  heartbeatOverrideS: number | null;
  stateDir: string;
  nvidiaSmi: string;
  nvidiaSmiTimeoutMs: number;
  /** Fewer visible GPUs than this makes the VM unhealthy. Unset: at least one. */
  expectedGpus: number | null;
  gpuTempMaxC: number;
  gpuMemTempMaxC: number;
  /** Read `NVRM: Xid` lines from dmesg (skipped silently where dmesg is not readable). */
  readXid: boolean;
  /** Only Xid events younger than this count (a reset GPU should not stay unhealthy until reboot). */
  xidWindowS: number;
  pollWaitMs: number;
  logLevel: LogLevel;
  /** In-use and idle detection (src/usage/detect.ts). */
  usage: {
    researchNames: string[];
    researchPattern: RegExp | null;
    gpuBusyPct: number;
    cpuBusyPct: number;
    idleAfterS: number;
    inputRecentS: number;
    /** argv of a command printing milliseconds since the last input (e.g. xprintidle); no shell. */
    inputIdleCommand: string[] | null;
  };
  /** The research user's Unix account; null: simulated in the state dir (local fleet). */
  researchUser: string | null;
  /** Overrides the research user's home from /etc/passwd. */
  researchHome: string | null;
  /** "per-assignment": a throw-away Unix account per holder (src/accounts.ts); "shared": researchUser. */
  researchAccounts: "shared" | "per-assignment";
  /** The research container replaced on release (cloud VMs); null: none. */
  researchContainer: { name: string; volume: string; start: string[] | null } | null;
  crd: { startHost: string; hostName: string | null; redirectUrl: string };
  /** The browser desktop (src/desktop/host.ts). */
  desktop: { mode: "auto" | "off"; geometry: string; typingFile: string | null };
  wipe: { files: FilePolicy; killProcesses: boolean };
  /** /proc, or a fake tree in tests. */
  procRoot: string;
  /** Log shipping (agent.logs): the agent's own lines plus the files below. */
  logs: {
    enabled: boolean;
    bufferLines: number;
    batchLines: number;
    flushMs: number;
    maxLineChars: number;
    /** cloud-init's output log; null: not shipped. */
    cloudInitLog: string | null;
    /** The research container's log file; null: not shipped. */
    containerLog: string | null;
  };
  /** Where boot timings come from. */
  boot: {
    cloudInitDir: string;
    containerReadyFile: string | null;
    /** The bootstrap's startup result (boot/readiness.ts); null: not reported. */
    startupResultFile: string | null;
    /** /proc for the boot time (btime); a simulated boot uses its own. */
    procRoot: string;
    /** Local fleet: write a plausible cloud-init run and container start into the state dir. */
    simulate: boolean;
    /** Local fleet: the fleet's startup script, run with bash during the simulated boot. */
    simulatedStartup: { script: string | null; onError: "fail" | "continue"; timeoutMs: number };
  };
};

export class ConfigError extends Error {
  override name = "ConfigError";
}

const optionalNumber = (...checks: Parameters<ReturnType<typeof z.number>["check"]>) =>
  z.optional(z.pipe(z.coerce.number(), z.number().check(...checks)));
const optionalString = (...checks: Parameters<ReturnType<typeof z.string>["check"]>) =>
  z.optional(z.string().check(...checks));
const boolFlag = z.optional(z.enum(["0", "1", "true", "false"]));

const envSchema = z.object({
  LABLINK_SERVER_URL: z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }),
  LABLINK_AGENT_TOKEN: optionalString(z.trim(), z.minLength(1)),
  LABLINK_AGENT_TOKEN_FILE: optionalString(z.minLength(1)),
  LABLINK_VM_ID: z.uuid({ error: "must be a UUID" }),
  LABLINK_SIMULATE_GPU: optionalString(
    z.regex(/^[^:]+(:\d{1,2})?$/, 'must be "<model>:<count>", e.g. "NVIDIA A10G:1"'),
  ),
  LABLINK_HEARTBEAT_S: optionalNumber(z.gte(0.01), z.lte(3600)),
  LABLINK_STATE_DIR: optionalString(z.minLength(1)),
  LABLINK_NVIDIA_SMI: z._default(z.string().check(z.minLength(1)), "nvidia-smi"),
  LABLINK_NVIDIA_SMI_TIMEOUT_MS: optionalNumber(z.int(), z.gte(100), z.lte(120_000)),
  LABLINK_EXPECTED_GPUS: optionalNumber(z.int(), z.gte(0), z.lte(64)),
  LABLINK_GPU_TEMP_MAX_C: optionalNumber(z.gte(30), z.lte(150)),
  LABLINK_GPU_MEM_TEMP_MAX_C: optionalNumber(z.gte(30), z.lte(150)),
  LABLINK_READ_XID: boolFlag,
  LABLINK_XID_WINDOW_S: optionalNumber(z.int(), z.gte(0), z.lte(30 * 86_400)),
  LABLINK_POLL_WAIT_MS: optionalNumber(z.int(), z.gte(0), z.lte(30_000)),
  LABLINK_BOOT_ID: optionalString(z.trim(), z.minLength(1), z.maxLength(128)),
  LOG_LEVEL: z._default(z.enum(LOG_LEVELS), "info"),
  LABLINK_RESEARCH_PROCESSES: optionalString(
    z.regex(/^[A-Za-z0-9._+-]+(,[A-Za-z0-9._+-]+)*$/, "must be comma-separated executable names"),
  ),
  LABLINK_RESEARCH_PATTERN: optionalString(
    z.maxLength(500),
    z.refine((p) => {
      try {
        new RegExp(p);
        return true;
      } catch {
        return false;
      }
    }, "must be a valid regular expression"),
  ),
  LABLINK_GPU_BUSY_PCT: optionalNumber(z.gte(0), z.lte(100)),
  LABLINK_CPU_BUSY_PCT: optionalNumber(z.gte(0), z.lte(1000)),
  LABLINK_IDLE_AFTER_S: optionalNumber(z.gte(0), z.lte(7 * 86_400)),
  LABLINK_INPUT_RECENT_S: optionalNumber(z.gte(1), z.lte(86_400)),
  LABLINK_INPUT_IDLE_CMD: optionalString(z.maxLength(500)),
  LABLINK_RESEARCH_USER: optionalString(
    z.regex(/^[a-z_][a-z0-9_-]{0,31}$/, "must be a Unix user name"),
  ),
  LABLINK_RESEARCH_HOME: optionalString(z.regex(/^\/./, "must be an absolute path")),
  LABLINK_RESEARCH_ACCOUNTS: z.optional(z.enum(["shared", "per-assignment"])),
  LABLINK_RESEARCH_CONTAINER: optionalString(z.regex(DOCKER_NAME, "must be a Docker name")),
  LABLINK_RESEARCH_VOLUME: optionalString(z.regex(DOCKER_NAME, "must be a Docker name")),
  LABLINK_RESEARCH_CONTAINER_START: optionalString(z.regex(/^\/./, "must be an absolute path")),
  LABLINK_CRD_START_HOST: optionalString(z.minLength(1)),
  LABLINK_CRD_NAME: optionalString(
    z.regex(/^[A-Za-z0-9._-]{1,64}$/, "letters, digits, . _ - only"),
  ),
  LABLINK_CRD_REDIRECT_URL: z.optional(z.url({ protocol: /^https$/ })),
  LABLINK_WIPE_FILES: optionalString(z.maxLength(2000)),
  LABLINK_WIPE_KILL_PROCESSES: boolFlag,
  LABLINK_PROC_ROOT: optionalString(z.minLength(1)),
  LABLINK_SHIP_LOGS: boolFlag,
  LABLINK_LOG_BUFFER_LINES: optionalNumber(z.int(), z.gte(10), z.lte(100_000)),
  LABLINK_LOG_BATCH_LINES: optionalNumber(z.int(), z.gte(1), z.lte(LOG_BATCH_MAX)),
  LABLINK_LOG_FLUSH_S: optionalNumber(z.gte(0.05), z.lte(300)),
  LABLINK_CLOUD_INIT_LOG: optionalString(z.minLength(1), z.maxLength(1000)),
  LABLINK_CONTAINER_LOG: optionalString(z.minLength(1), z.maxLength(1000)),
  LABLINK_CLOUD_INIT_DIR: optionalString(z.minLength(1), z.maxLength(1000)),
  LABLINK_CONTAINER_READY_FILE: optionalString(z.minLength(1), z.maxLength(1000)),
  LABLINK_STARTUP_RESULT_FILE: optionalString(z.minLength(1), z.maxLength(1000)),
  LABLINK_SIMULATE_BOOT: boolFlag,
  /**
   * What a warm reboot from automatic recovery does: "system" runs `systemctl reboot` (a VM);
   * "exit" ends the agent with REBOOT_EXIT_CODE so its parent restarts it (the local fleet's
   * simulated VMs); "refuse" ignores the command (a bring-your-own workstation someone sits at).
   */
  LABLINK_REBOOT: z.optional(z.enum(["system", "exit", "refuse"])),
  /** "auto" (default): a browser desktop when Xvfb and x11vnc are installed; "off": none. */
  LABLINK_DESKTOP: z.optional(z.enum(["auto", "off"])),
  LABLINK_DESKTOP_GEOMETRY: optionalString(z.regex(/^\d{3,4}x\d{3,4}$/, "must be like 1280x800")),
  /** Local fleet and tests: the desktop's terminal appends what is typed to this file. */
  LABLINK_DESKTOP_TYPING_FILE: optionalString(z.regex(/^\/./, "must be an absolute path")),
  LABLINK_SIMULATE_STARTUP_SCRIPT: optionalString(z.minLength(1), z.maxLength(1000)),
  LABLINK_SIMULATE_STARTUP_ON_ERROR: z.optional(z.enum(["fail", "continue"])),
  LABLINK_SIMULATE_STARTUP_TIMEOUT_S: optionalNumber(z.gte(0.1), z.lte(3600)),
});

/** "none" switches a file off. */
const pathOrNone = (v: string | undefined, fallback: string | null) =>
  v === undefined ? fallback : v === "none" ? null : v;

function filePolicy(value: string | undefined): FilePolicy {
  if (value === undefined || value === "home") return { kind: "home" };
  if (value === "none") return { kind: "none" };
  const paths = value.split(",").map((p) => p.trim());
  const bad = paths.filter((p) => safeRelativePath(p) === null);
  if (bad.length > 0) {
    throw new ConfigError(
      `Invalid agent configuration:\n  LABLINK_WIPE_FILES: "home", "none" or comma-separated paths inside the home (not ${bad.join(", ")})`,
    );
  }
  return { kind: "paths", paths };
}

const flag = (v: string | undefined, fallback: boolean) =>
  v === undefined ? fallback : ["1", "true"].includes(v);

/** Names of every variable the agent reads, for docs and tests. */
export const CONFIG_VARIABLES = Object.keys(envSchema.shape);

function readBootId(): string {
  try {
    const id = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    if (id) return id;
  } catch {
    // Not Linux, or /proc not mounted (some containers): a per-process id still tells the server
    // "this is a new start", which is the safe direction to be wrong in.
  }
  return randomUUID();
}

function tokenFromFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    throw new ConfigError(`LABLINK_AGENT_TOKEN_FILE: cannot read ${path} (${code})`);
  }
  const token = text.trim();
  if (!token) throw new ConfigError(`LABLINK_AGENT_TOKEN_FILE: ${path} is empty`);
  return token;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AgentConfig {
  // An exported-but-empty variable means "not set" (common in systemd units and compose files).
  const cleaned = Object.fromEntries(
    CONFIG_VARIABLES.map((k) => [k, env[k] === "" ? undefined : env[k]]),
  );
  const parsed = envSchema.safeParse(cleaned);
  const problems = parsed.success
    ? []
    : parsed.error.issues.map((issue) => {
        const name = String(issue.path[0] ?? "config");
        return `  ${name}: ${cleaned[name] === undefined ? "is required" : issue.message}`;
      });
  if (!cleaned.LABLINK_AGENT_TOKEN?.trim() && !cleaned.LABLINK_AGENT_TOKEN_FILE) {
    problems.push("  LABLINK_AGENT_TOKEN: is required (or set LABLINK_AGENT_TOKEN_FILE)");
  }
  if (!parsed.success || problems.length > 0) {
    throw new ConfigError(`Invalid agent configuration:\n${problems.join("\n")}`);
  }
  const e = parsed.data;

  let token: () => string;
  let tokenSource: string;
  const tokenFile = e.LABLINK_AGENT_TOKEN_FILE;
  if (tokenFile) {
    tokenFromFile(tokenFile); // fail fast at start-up, not on the first request
    token = () => tokenFromFile(tokenFile);
    tokenSource = tokenFile;
  } else {
    const value = e.LABLINK_AGENT_TOKEN ?? "";
    token = () => value;
    tokenSource = "env";
  }

  let simulateGpu: AgentConfig["simulateGpu"] = null;
  if (e.LABLINK_SIMULATE_GPU) {
    const m = /^(.+?)(?::(\d+))?$/.exec(e.LABLINK_SIMULATE_GPU.trim());
    const count = Number(m?.[2] ?? 1);
    if (!m?.[1] || count < 1 || count > 16) {
      throw new ConfigError(
        "Invalid agent configuration:\n  LABLINK_SIMULATE_GPU: count must be 1 to 16",
      );
    }
    simulateGpu = { model: m[1].trim(), count };
  }

  const stateDir = e.LABLINK_STATE_DIR ?? join(tmpdir(), `lablink-agent-${e.LABLINK_VM_ID}`);
  const simulateBoot = flag(e.LABLINK_SIMULATE_BOOT, false);
  const simDir = join(stateDir, "simulated-boot");

  return {
    serverUrl: e.LABLINK_SERVER_URL.replace(/\/+$/, ""),
    token,
    tokenSource,
    vmId: e.LABLINK_VM_ID.toLowerCase(),
    bootId: e.LABLINK_BOOT_ID ?? readBootId(),
    reboot: e.LABLINK_REBOOT ?? "system",
    simulateGpu,
    heartbeatOverrideS: e.LABLINK_HEARTBEAT_S ?? null,
    stateDir,
    nvidiaSmi: e.LABLINK_NVIDIA_SMI,
    nvidiaSmiTimeoutMs: e.LABLINK_NVIDIA_SMI_TIMEOUT_MS ?? 10_000,
    expectedGpus: e.LABLINK_EXPECTED_GPUS ?? null,
    gpuTempMaxC: e.LABLINK_GPU_TEMP_MAX_C ?? 90,
    gpuMemTempMaxC: e.LABLINK_GPU_MEM_TEMP_MAX_C ?? 95,
    readXid: e.LABLINK_READ_XID === undefined || ["1", "true"].includes(e.LABLINK_READ_XID),
    xidWindowS: e.LABLINK_XID_WINDOW_S ?? 3600,
    pollWaitMs: e.LABLINK_POLL_WAIT_MS ?? 25_000,
    logLevel: e.LOG_LEVEL,
    usage: {
      researchNames: e.LABLINK_RESEARCH_PROCESSES?.split(",") ?? [],
      researchPattern: e.LABLINK_RESEARCH_PATTERN ? new RegExp(e.LABLINK_RESEARCH_PATTERN) : null,
      gpuBusyPct: e.LABLINK_GPU_BUSY_PCT ?? 10,
      cpuBusyPct: e.LABLINK_CPU_BUSY_PCT ?? 5,
      idleAfterS: e.LABLINK_IDLE_AFTER_S ?? 1800,
      inputRecentS: e.LABLINK_INPUT_RECENT_S ?? 300,
      inputIdleCommand: e.LABLINK_INPUT_IDLE_CMD?.trim()
        ? e.LABLINK_INPUT_IDLE_CMD.trim().split(/\s+/)
        : null,
    },
    researchUser: e.LABLINK_RESEARCH_USER ?? null,
    researchHome: e.LABLINK_RESEARCH_HOME ?? null,
    researchAccounts: e.LABLINK_RESEARCH_ACCOUNTS ?? "shared",
    researchContainer: e.LABLINK_RESEARCH_CONTAINER
      ? {
          name: e.LABLINK_RESEARCH_CONTAINER,
          volume: e.LABLINK_RESEARCH_VOLUME ?? "lablink-workspace",
          start: e.LABLINK_RESEARCH_CONTAINER_START ? [e.LABLINK_RESEARCH_CONTAINER_START] : null,
        }
      : null,
    crd: {
      startHost: e.LABLINK_CRD_START_HOST ?? DEFAULT_START_HOST,
      hostName: e.LABLINK_CRD_NAME ?? null,
      redirectUrl: e.LABLINK_CRD_REDIRECT_URL ?? DEFAULT_REDIRECT_URL,
    },
    desktop: {
      mode: e.LABLINK_DESKTOP ?? "auto",
      geometry: e.LABLINK_DESKTOP_GEOMETRY ?? "1280x800",
      typingFile: e.LABLINK_DESKTOP_TYPING_FILE ?? null,
    },
    wipe: {
      files: filePolicy(e.LABLINK_WIPE_FILES),
      // Only meaningful with a real research user; the local fleet has none.
      killProcesses: flag(e.LABLINK_WIPE_KILL_PROCESSES, true),
    },
    procRoot: e.LABLINK_PROC_ROOT ?? "/proc",
    logs: {
      enabled: flag(e.LABLINK_SHIP_LOGS, true),
      bufferLines: e.LABLINK_LOG_BUFFER_LINES ?? 2_000,
      batchLines: e.LABLINK_LOG_BATCH_LINES ?? 200,
      flushMs: Math.round((e.LABLINK_LOG_FLUSH_S ?? 3) * 1000),
      maxLineChars: LOG_LINE_MAX,
      cloudInitLog: simulateBoot
        ? join(simDir, "cloud-init-output.log")
        : pathOrNone(e.LABLINK_CLOUD_INIT_LOG, "/var/log/cloud-init-output.log"),
      containerLog: simulateBoot
        ? join(simDir, "container.log")
        : pathOrNone(e.LABLINK_CONTAINER_LOG, null),
    },
    boot: {
      cloudInitDir: simulateBoot
        ? join(simDir, "run-cloud-init")
        : (e.LABLINK_CLOUD_INIT_DIR ?? "/run/cloud-init"),
      containerReadyFile: simulateBoot
        ? join(simDir, "container-ready")
        : pathOrNone(e.LABLINK_CONTAINER_READY_FILE, null),
      startupResultFile: simulateBoot
        ? join(simDir, "startup-result.json")
        : pathOrNone(e.LABLINK_STARTUP_RESULT_FILE, null),
      procRoot: simulateBoot ? join(simDir, "proc") : (e.LABLINK_PROC_ROOT ?? "/proc"),
      simulate: simulateBoot,
      simulatedStartup: {
        script: e.LABLINK_SIMULATE_STARTUP_SCRIPT ?? null,
        onError: e.LABLINK_SIMULATE_STARTUP_ON_ERROR ?? "continue",
        timeoutMs: Math.round((e.LABLINK_SIMULATE_STARTUP_TIMEOUT_S ?? 300) * 1000),
      },
    },
  };
}
