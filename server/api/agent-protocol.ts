import { z } from "zod";

/**
 * The agent wire protocol (tRPC procedures `agent.*`). The agent package imports these types with
 * `import type` only; the server validates every field with these schemas. Bump
 * AGENT_PROTOCOL_VERSION when a change is not backwards compatible.
 */
export const AGENT_PROTOCOL_VERSION = 1;

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

/** Every agent call names the VM it acts for; the server checks it matches the token's VM. */
const vmRef = { vmId: z.uuid() };

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
   * carries `credential`, and the token used for this call stops working after a grace period.
   */
  rotateCredential: z.boolean().optional(),
});
export type RegisterInput = z.infer<typeof registerInput>;

export const heartbeatInput = z.strictObject({
  ...vmRef,
  bootId: shortText(128),
  gpus: z.array(gpuReadingSchema).max(64),
  health: healthSchema,
  inUse: z.boolean(),
  /** When the VM last became idle (ISO 8601), or null while in use. */
  idleSince: z.iso.datetime({ offset: true }).nullable(),
  diskFreePct: z.number().min(0).max(100).nullable().optional(),
});
export type HeartbeatInput = z.infer<typeof heartbeatInput>;

export const ackInput = z.strictObject({
  ...vmRef,
  type: z.enum(["assign", "wipe"]),
  assignmentId: z.uuid(),
  ok: z.boolean(),
  /** Why the command failed, shown to admins (and to the researcher for connection hand-off). */
  error: z.string().max(1000).optional(),
});
export type AckInput = z.infer<typeof ackInput>;

export const pollInput = z.strictObject({
  ...vmRef,
  /** How long the server may hold the request open when there is nothing to do. */
  waitMs: z.number().int().min(0).max(30_000).default(25_000),
});

/** Commands are derived from the VM's state on every reply, so a missed push loses nothing. */
export type AgentCommand =
  | {
      type: "assign";
      assignmentId: string;
      /** Who now holds the VM. No email, no secrets. */
      user: { id: string; displayName: string };
    }
  | { type: "wipe"; assignmentId: string }
  | { type: "shutdown"; reason: string };

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
