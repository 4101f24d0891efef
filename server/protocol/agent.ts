import { z } from "zod";

/**
 * The agent wire protocol (tRPC procedures `agent.*`). The agent package imports these types with
 * `import type` only; the server validates every field with these schemas. Bump
 * AGENT_PROTOCOL_VERSION when a change is not backwards compatible.
 */
export const AGENT_PROTOCOL_VERSION = 4;

/**
 * Agents registered with a lower protocol version get no `connect` commands (a version-1 agent
 * would have taken an unknown command for a wipe).
 */
export const CONNECT_MIN_PROTOCOL_VERSION = 2;

/**
 * Agents registered with a lower protocol version get no `export` commands (an older agent would
 * log it as unknown and the researcher's download would wait for nothing).
 */
export const EXPORT_MIN_PROTOCOL_VERSION = 4;

/** An export upload's chunk bodies are at most this large (POST /api/agent/export/<id>). */
export const EXPORT_CHUNK_MAX_BYTES = 4 * 1024 * 1024;

/**
 * Agents registered with a lower protocol version get no `desktop` commands: they would log it as
 * unknown and the browser would wait for a relay that never comes.
 */
export const DESKTOP_MIN_PROTOCOL_VERSION = 4;

/** The agent's side of a desktop relay: `GET` with `Upgrade: websocket` and its bearer token. */
export const AGENT_DESKTOP_PATH = "/api/agent/desktop/";

/**
 * A local-fleet agent told to reboot (LABLINK_REBOOT=exit) exits with this code; the local driver
 * starts it again with a new boot id, as a simulated VM's reboot.
 */
export const REBOOT_EXIT_CODE = 75;

const shortText = (max: number) => z.string().trim().min(1).max(max);

export const gpuReadingSchema = z.strictObject({
  index: z.number().int().min(0).max(64),
  uuid: z.string().max(128).nullable(),
  name: shortText(128),
  temperatureC: z.number().min(-50).max(200).nullable(),
  utilizationPct: z.number().min(0).max(100).nullable(),
  memoryUsedMiB: z.number().min(0).max(10_000_000).nullable(),
  memoryTotalMiB: z.number().min(0).max(10_000_000).nullable(),
  powerDrawW: z.number().min(0).max(100_000).nullable(),
  healthy: z.boolean(),
  /** Why this GPU is unhealthy, e.g. "uncorrectable ECC errors: 3", "thermal throttling". */
  reasons: z.array(z.string().max(200)).max(20),
});
export type GpuReadingInput = z.infer<typeof gpuReadingSchema>;

export const healthSchema = z.strictObject({
  healthy: z.boolean(),
  reasons: z.array(z.string().max(200)).max(50),
});

/** The agent keeps at most this many unsent readings (one per missed heartbeat). */
export const BACKLOG_MAX = 120;

/** A compact reading kept by the agent while the server was unreachable. */
export const backlogEntrySchema = z.strictObject({
  at: z.iso.datetime({ offset: true }),
  healthy: z.boolean(),
  reasons: z.array(z.string().max(200)).max(20),
  inUse: z.boolean(),
  maxUtilizationPct: z.number().min(0).max(100).nullable(),
  maxTemperatureC: z.number().min(-50).max(200).nullable(),
});
export type BacklogEntry = z.infer<typeof backlogEntrySchema>;

/** Every agent call names the VM it acts for; the server checks it matches the token's VM. */
const vmRef = { vmId: z.uuid() };

const instant = z.iso.datetime({ offset: true }).nullable();

/**
 * When this boot's milestones happened, as far as the agent can tell (null: not yet, or unknown).
 * The server adds `bootId` and `registeredAt` and keeps the object per boot (vms.boot_timings).
 */
export const bootTimingsInput = z.strictObject({
  /** Kernel boot time (/proc/stat btime). */
  bootedAt: instant,
  /** cloud-init's last stage (modules-final) finished; null while it runs or where it never ran. */
  cloudInitFinishedAt: instant,
  /** "running", "done", "error" (finished with errors), "disabled" or null (no cloud-init seen). */
  cloudInitStatus: z.enum(["running", "done", "error", "disabled"]).nullable(),
  /** The research container said it is ready (its marker file appeared). */
  containerReadyAt: instant,
  agentStartedAt: instant,
});
export type BootTimingsInput = z.infer<typeof bootTimingsInput>;

/** Most startup-script output lines an agent reports; longer lines are cut to STARTUP_LINE_MAX. */
export const STARTUP_LINES_MAX = 20;
export const STARTUP_LINE_MAX = 500;

/**
 * Whether the VM can take a researcher: its research container and the fleet's startup script,
 * as the bootstrap recorded them (/run/lablink/container-ready and startup-result.json).
 * Additive: an agent that sends none (older agents, VMs without a research container) is
 * brought into service at registration as before.
 */
export const readinessInput = z.strictObject({
  /** "failed": the bootstrap stopped the container or it never started. */
  container: z.enum(["starting", "ready", "failed"]),
  /** Absent while the script still runs (no result yet). */
  startup: z
    .strictObject({
      /** "none": the fleet has no startup script. */
      status: z.enum(["ok", "failed", "none"]),
      exitCode: z.number().int().min(-1).max(100_000).nullable().optional(),
      finishedAt: instant.optional(),
      onError: z.enum(["fail", "continue"]),
      /** The script's last output lines, control characters stripped. */
      lastLines: z.array(z.string().max(STARTUP_LINE_MAX)).max(STARTUP_LINES_MAX).optional(),
    })
    .optional(),
});
export type ReadinessInput = z.infer<typeof readinessInput>;

export const LOG_SOURCES = ["agent", "cloud-init", "container"] as const;
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
/** Most lines in one agent.logs call; the agent batches at most this many. */
export const LOG_BATCH_MAX = 500;
/** Longest line the server stores (characters); the agent cuts longer ones first. */
export const LOG_LINE_MAX = 4096;

export const logLineSchema = z.strictObject({
  at: z.iso.datetime({ offset: true }),
  source: z.enum(LOG_SOURCES),
  level: z.enum(LOG_LEVELS),
  message: z.string().max(LOG_LINE_MAX),
});
export type LogLine = z.infer<typeof logLineSchema>;

export const logsInput = z.strictObject({
  ...vmRef,
  bootId: shortText(128),
  lines: z.array(logLineSchema).min(1).max(LOG_BATCH_MAX),
  /** Lines the agent dropped (its buffer was full) since its last successful call. */
  dropped: z.number().int().min(0).max(1_000_000_000).optional(),
});
export type LogsInput = z.infer<typeof logsInput>;

export const registerInput = z.strictObject({
  ...vmRef,
  /** Changes on every boot (e.g. /proc/sys/kernel/random/boot_id); tells the server the VM rebooted. */
  bootId: shortText(128),
  hostname: shortText(255),
  agentVersion: shortText(64),
  protocolVersion: z.number().int().min(1).max(1000),
  gpus: z.array(gpuReadingSchema).max(64),
  health: healthSchema,
  /**
   * The agent can store a new token (it reads it from a file it may write): the reply then
   * carries `credential`, and the token used for this call stops working once the new one has
   * been used.
   */
  rotateCredential: z.boolean().optional(),
  /** Additive (agents before it send none): this boot's timings so far. */
  bootTimings: bootTimingsInput.optional(),
  /** Additive: the research container and startup script; absent: ready at registration. */
  readiness: readinessInput.optional(),
});
export type RegisterInput = z.infer<typeof registerInput>;

export const heartbeatInput = z.strictObject({
  ...vmRef,
  bootId: shortText(128),
  gpus: z.array(gpuReadingSchema).max(64),
  health: healthSchema,
  inUse: z.boolean(),
  /**
   * Since when nothing happened on the VM (no session, GPU below the threshold, no research
   * process activity) once that has lasted the agent's idle time (ISO 8601); null while active.
   * Independent of `inUse`: research software left open overnight is in use but idle.
   */
  idleSince: z.iso.datetime({ offset: true }).nullable(),
  diskFreePct: z.number().min(0).max(100).nullable().optional(),
  /** Readings the agent could not send while the server was unreachable (oldest first). */
  backlog: z.array(backlogEntrySchema).max(BACKLOG_MAX).optional(),
  /** How many older readings the agent dropped because its queue was full. */
  backlogDropped: z.number().int().min(0).max(1_000_000).optional(),
  /** The agent is stopping (SIGTERM: reboot, shutdown, upgrade): keep the VM out of the pool. */
  shuttingDown: z.boolean().optional(),
  /** Sent when the boot timings changed since the last call the server took (cloud-init finished). */
  bootTimings: bootTimingsInput.optional(),
  /** Sent when the readiness changed since the last call the server took. */
  readiness: readinessInput.optional(),
});
export type HeartbeatInput = z.infer<typeof heartbeatInput>;

export const ackInput = z
  .strictObject({
    ...vmRef,
    type: z.enum(["assign", "wipe", "connect"]),
    assignmentId: z.uuid(),
    /** Required for `connect`: which hand-off request this answers. */
    requestId: z.uuid().optional(),
    ok: z.boolean(),
    /** Why the command failed, shown to admins (and to the researcher for connection hand-off). */
    error: z.string().max(1000).optional(),
    /** Only with a wipe that carried `archive`: how the upload went. */
    archive: z
      .strictObject({
        ok: z.boolean(),
        bytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
        error: z.string().max(1000).optional(),
      })
      .optional(),
  })
  .refine((a) => a.type !== "connect" || a.requestId !== undefined, {
    message: "requestId is required to acknowledge a connect command",
    path: ["requestId"],
  });
export type AckInput = z.infer<typeof ackInput>;

export const pollInput = z.strictObject({
  ...vmRef,
  /** How long the server may hold the request open when there is nothing to do. */
  waitMs: z.number().int().min(0).max(30_000).default(25_000),
});

/**
 * agent.rotate: a new token before the agent sets the VM up for a new assignment. The token the
 * call came with keeps working until the new one is used once.
 */
export const rotateInput = z.strictObject({
  ...vmRef,
  assignmentId: z.uuid(),
});
export type RotateInput = z.infer<typeof rotateInput>;
export type RotateReply = { credential: string };

/** Commands are derived from the VM's state on every reply, so a missed push loses nothing. */
export type AgentCommand =
  | {
      type: "assign";
      assignmentId: string;
      /** Who now holds the VM. No email, no secrets. */
      user: { id: string; displayName: string };
      /** The holder's SSH public keys, each "type base64" (validated by the server). */
      sshKeys?: string[];
      /**
       * The throw-away Unix account an agent that makes one per assignment creates for the holder
       * (`ll-` and 12 hex digits); `root`: with sudo and the docker group (fleets marked "root
       * for researchers", whose VMs are replaced on release instead of wiped).
       */
      account?: { name: string; root: boolean };
    }
  | {
      /**
       * Chrome Remote Desktop hand-off for the current holder. Sent only to this VM's agent, only
       * until acknowledged; the agent runs start-host with the code as one argv element and the
       * PIN on stdin.
       */
      type: "connect";
      method: "crd";
      assignmentId: string;
      requestId: string;
      code: string;
      pin: string;
    }
  | {
      /**
       * The holder downloads their work folder (protocol 4+): the agent measures the folder,
       * then POSTs it as a tar.gz in chunks to /api/agent/export/<exportId> (docs/agent-protocol.md).
       * The export id is single-use and secret.
       */
      type: "export";
      assignmentId: string;
      exportId: string;
    }
  | {
      /**
       * Browser desktop (protocol 4+): a viewer is waiting on the server. The agent opens an
       * outbound WebSocket to `AGENT_DESKTOP_PATH + relayId` with its token and pipes it to its
       * local VNC server (127.0.0.1 only). Offered until the agent connects or ~30 s pass; the
       * agent opens each relay id at most once.
       */
      type: "desktop";
      relayId: string;
      assignmentId: string;
    }
  | {
      type: "wipe";
      assignmentId: string;
      /**
       * Protocol 4, fleets with a work archive: before wiping, upload the work folder as a tar.gz
       * with an HTTP PUT to `url` (presigned S3, Content-Length set), a few tries at most, then
       * wipe whatever happened and report the outcome in the wipe's ack (`archive`).
       */
      archive?: { url: string; key: string };
    }
  | { type: "shutdown"; reason: string }
  | {
      /**
       * Automatic recovery's warm reboot (protocol 3+): the agent reboots its machine. Meant for
       * the boot named here only; an agent that already restarted (another boot id) ignores it.
       */
      type: "reboot";
      bootId: string;
      reason: string;
    };

export type AgentReply = {
  vmId: string;
  state: string;
  heartbeatIntervalS: number;
  commands: AgentCommand[];
  /** True when the server wants the agent to call agent.register again (e.g. unknown boot). */
  reRegister: boolean;
  /** Only on a register reply that asked for rotation: this VM's new agent token. */
  credential?: string;
};

/** An agent on a bring-your-own machine presents its enrollment token and describes itself. */
export const enrollInput = z.strictObject({
  hostname: shortText(255),
  agentVersion: shortText(64),
  protocolVersion: z.number().int().min(1).max(1000),
});
export type EnrollInput = z.infer<typeof enrollInput>;

export type EnrollReply = {
  vmId: string;
  name: string;
  /** The machine's own agent token; the enrollment token is not needed again. */
  token: string;
};
