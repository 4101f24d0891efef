import { and, eq, sql } from "drizzle-orm";
import { rotateAgentToken } from "../auth/agent-tokens";
import type { DbOrTx } from "../db/client";
import { preparedPerDb } from "../db/prepared";
import { fleets, type Vm, vms } from "../db/schema";
import type {
  AckInput,
  AgentCommand,
  AgentReply,
  HeartbeatInput,
  ReadinessInput,
  RegisterInput,
} from "../protocol/agent";
import { displayNameOf } from "./allocation";
import { audit } from "./audit";
import { desktopCommandsFor } from "./desktop";
import { DomainError } from "./errors";
import { connectCommandFor, finishCrdHandoff } from "./handoff";
import { heartbeatBuffer } from "./heartbeat-buffer";
import { cleanStartupLines, readinessVerdict } from "./readiness";
import { warmRebootPending } from "./recovery";
import { afterReboot, researchAccountFor, wipeAcknowledged } from "./replacement";
import { keyLinesFor } from "./ssh-keys";
import { bootTimingsUpdate, mergeBootTimings } from "./vm-logs";
import { type Actor, transition } from "./vm-state";
import { archiveForWipe, recordArchive } from "./work-archive";
import { exportCommandsFor } from "./work-export";

export type AgentSettings = {
  heartbeatIntervalS: number;
  /**
   * How long a heartbeat that changes nothing material may wait to be written with others
   * (LABLINK_HEARTBEAT_FLUSH_MS, default 1000; 0 writes every heartbeat at once).
   */
  heartbeatFlushMs?: number;
  /** At most one GPU sample per VM per this many seconds (LABLINK_GPU_SAMPLE_INTERVAL_S; 0: none). */
  gpuSampleIntervalS?: number;
};

export const DEFAULT_HEARTBEAT_FLUSH_MS = 1000;

/** The agent settings a web process runs with, from its configuration (server/env.ts). */
export function agentSettingsFrom(e: {
  LABLINK_HEARTBEAT_INTERVAL_S: number;
  LABLINK_HEARTBEAT_FLUSH_MS: number;
  LABLINK_GPU_SAMPLE_INTERVAL_S: number;
}): AgentSettings {
  return {
    heartbeatIntervalS: e.LABLINK_HEARTBEAT_INTERVAL_S,
    heartbeatFlushMs: e.LABLINK_HEARTBEAT_FLUSH_MS,
    gpuSampleIntervalS: e.LABLINK_GPU_SAMPLE_INTERVAL_S,
  };
}
export const DEFAULT_GPU_SAMPLE_INTERVAL_S = 60;

/**
 * Commands are derived from the VM row on every reply (level-triggered), so a lost push or a
 * lost reply is repaired by the next heartbeat; the agent de-duplicates by assignment id.
 */
export async function commandsFor(db: DbOrTx, vm: Vm): Promise<AgentCommand[]> {
  if (vm.state === "terminating" || vm.state === "terminated") {
    return [{ type: "shutdown", reason: `VM is ${vm.state}` }];
  }
  if (vm.state === "rebooting" && vm.bootId && (await warmRebootPending(db, vm))) {
    return [{ type: "reboot", bootId: vm.bootId, reason: "automatic recovery: warm reboot" }];
  }
  if (vm.state === "releasing" && vm.assignmentId) {
    const archive = await archiveForWipe(db, vm);
    return [{ type: "wipe", assignmentId: vm.assignmentId, ...(archive ? { archive } : {}) }];
  }
  if (
    (vm.state === "claimed" || vm.state === "draining") &&
    vm.holderId &&
    vm.assignmentId &&
    vm.assignmentAckedId !== vm.assignmentId
  ) {
    return [
      {
        type: "assign",
        assignmentId: vm.assignmentId,
        user: { id: vm.holderId, displayName: await displayNameOf(db, vm.holderId) },
        sshKeys: await keyLinesFor(db, vm.holderId),
        account: await researchAccountFor(db, vm, vm.assignmentId),
      },
      ...(await connectCommands(db, vm)),
    ];
  }
  if ((vm.state === "claimed" || vm.state === "draining") && vm.holderId) {
    return connectCommands(db, vm);
  }
  return [];
}

/** The holder's pending hand-offs: a Chrome Remote Desktop code, desktop viewers waiting, work downloads (once the VM is set up for them). */
async function connectCommands(db: DbOrTx, vm: Vm): Promise<AgentCommand[]> {
  const connect = await connectCommandFor(db, vm);
  const desktop = await desktopCommandsFor(db, vm);
  const exports = vm.assignmentAckedId === vm.assignmentId ? await exportCommandsFor(db, vm) : [];
  return [...(connect ? [connect] : []), ...desktop, ...exports];
}

async function reply(
  db: DbOrTx,
  vm: Vm,
  settings: AgentSettings,
  reRegister = false,
): Promise<AgentReply> {
  return {
    vmId: vm.id,
    state: vm.state,
    heartbeatIntervalS: settings.heartbeatIntervalS,
    commands: await commandsFor(db, vm),
    reRegister,
  };
}

/**
 * The VM with its fleet's expected GPU count: one query for everything a heartbeat checks, built
 * once per database and sent as a named prepared statement (every agent call makes it).
 */
const loadVmQuery = preparedPerDb((db) =>
  db
    .select({ vm: vms, expectedGpus: fleets.gpuCount })
    .from(vms)
    .innerJoin(fleets, eq(fleets.id, vms.fleetId))
    .where(eq(vms.id, sql.placeholder("vmId")))
    .prepare("lablink_agent_load_vm"),
);

async function loadVm(db: DbOrTx, vmId: string): Promise<Vm & { expectedGpus: number }> {
  const [row] = await loadVmQuery(db).execute({ vmId });
  if (!row) throw new DomainError("NOT_FOUND", "This VM is not known to the server.");
  return { ...row.vm, expectedGpus: row.expectedGpus };
}

/** Server-side checks on top of the agent's own verdict. */
function healthVerdict(
  vm: { expectedGpus: number },
  input: Pick<RegisterInput, "gpus" | "health">,
): { healthy: boolean; reasons: string[] } {
  const reasons = [...input.health.reasons];
  if (input.gpus.length < vm.expectedGpus) {
    reasons.push(`expected ${vm.expectedGpus} GPU(s), agent reports ${input.gpus.length}`);
  }
  return {
    healthy: input.health.healthy && reasons.length === input.health.reasons.length,
    reasons,
  };
}

/**
 * An agent (re)starts: record who it is, and bring a booting VM into service — back to its
 * holder after a warm reboot, otherwise into the pool.
 */
export async function registerAgent(
  db: DbOrTx,
  input: RegisterInput,
  settings: AgentSettings,
  actor: Actor,
  /** The token the call came with: a rotation keeps it working until the new one is used. */
  caller?: { credentialId: string },
): Promise<AgentReply> {
  const loaded = await loadVm(db, input.vmId);
  let vm: Vm = loaded;
  if (vm.state === "terminated" || vm.state === "terminating") return reply(db, vm, settings);
  const health = healthVerdict(loaded, input);
  const rebooted = vm.bootId !== null && vm.bootId !== input.bootId;

  [vm] = (await db
    .update(vms)
    .set({
      bootId: input.bootId,
      hostname: input.hostname,
      agentVersion: input.agentVersion,
      agentProtocolVersion: input.protocolVersion,
      gpus: input.gpus,
      healthy: health.healthy,
      healthReasons: health.reasons,
      lastHeartbeatAt: sql`now()`,
      bootTimings: mergeBootTimings(vm.bootTimings, input.bootId, input.bootTimings, true),
      // After a reboot the holder's setup is gone: deliver the assignment again.
      ...(rebooted ? { assignmentAckedId: null } : {}),
    })
    .where(eq(vms.id, vm.id))
    .returning()) as [Vm];
  await audit(
    db,
    actor,
    "agent.register",
    { kind: "vm", id: vm.id },
    {
      bootId: input.bootId,
      agentVersion: input.agentVersion,
      rebooted,
      healthy: health.healthy,
    },
  );

  vm = await bringIntoService(db, vm, actor, input.readiness);
  if (!input.rotateCredential || !caller) return reply(db, vm, settings);
  // Every (re)start of an agent that can store a token gets a fresh one.
  const { credential } = await rotateCredential(db, {
    vmId: vm.id,
    callerCredentialId: caller.credentialId,
    reason: "register",
    actor,
  });
  return { ...(await reply(db, vm, settings)), credential };
}

/**
 * A VM whose agent (or original client image) has (re)started comes into service: back to its
 * holder after a warm reboot, otherwise into the pool. Other states are left as they are.
 *
 * With `readiness` (agents that report their research container and startup script) it does so
 * only once the container is up and the script passed; until then the VM stays booting (or
 * rebooting), and a verdict of `failed` takes an unheld VM out for good. Without it (older
 * agents, original client images, VMs without a research container) registration is enough.
 */
export async function bringIntoService(
  db: DbOrTx,
  vm: Vm,
  actor: Actor,
  readiness?: ReadinessInput,
): Promise<Vm> {
  const verdict = readiness ? readinessVerdict(readiness) : null;
  if (verdict?.kind === "failed") {
    if (!UNHELD_GATED.includes(vm.state) || vm.holderId) return vm;
    return transition(db, {
      vmId: vm.id,
      from: vm.state,
      to: "failed",
      actor,
      action: "vm.startup_failed",
      patch: { startupIssue: verdict.issue },
      details: {
        reason: verdict.reason,
        lastLines: cleanStartupLines(readiness?.startup?.lastLines),
        onError: readiness?.startup?.onError ?? null,
        exitCode: readiness?.startup?.exitCode ?? null,
      },
    });
  }
  if (vm.state === "provisioning") {
    vm = await transition(db, {
      vmId: vm.id,
      from: vm.state,
      to: "booting",
      actor,
      action: "agent.register",
    });
  }
  if (verdict?.kind === "wait") return vm;
  const warning = verdict?.kind === "ready" ? verdict.warning : null;
  // Only what the agent reported for this boot: a clean report clears an earlier warning.
  const patch = verdict ? { startupIssue: warning } : {};
  const details = warning ? { startupWarning: warning } : undefined;
  if (vm.state === "rebooting") {
    // A held VM goes back to its holder; any other rebooted VM (a failed one, one an admin
    // rebooted from the pool) may hold anything of a past holder: wiped before it is ready.
    const req = afterReboot(vm, actor);
    vm = await transition(db, {
      ...req,
      patch: { ...req.patch, ...patch },
      details: { ...req.details, ...details },
    });
  }
  if (vm.state === "booting") {
    vm = await transition(db, {
      vmId: vm.id,
      from: "booting",
      // A VM rebooted while held goes back to its holder, not into the pool.
      to: vm.holderId ? "claimed" : "ready",
      actor,
      action: "agent.register",
      patch,
      ...(details ? { details } : {}),
    });
  }
  if (warning && vm.startupIssue !== warning) {
    // Already in service (a heartbeat after registration): record the warning all the same.
    await db.update(vms).set({ startupIssue: warning }).where(eq(vms.id, vm.id));
    await audit(db, actor, "vm.startup_warning", { kind: "vm", id: vm.id }, { warning });
    vm = { ...vm, startupIssue: warning };
  }
  return vm;
}

/** States a failed startup takes out of service (a held VM keeps its holder; admins decide). */
const UNHELD_GATED: readonly Vm["state"][] = ["provisioning", "booting", "rebooting", "ready"];

/**
 * Hands the agent a new token. The token it called with keeps working until the new one is used
 * once (server/auth/agent-tokens.ts), so a lost reply is repaired by asking again. Agents ask at
 * start-up and before setting the VM up for each new holder, so a token read during one hold
 * (by anyone root on the VM) is dead before the next holder gets the VM.
 */
export async function rotateCredential(
  db: DbOrTx,
  params: {
    vmId: string;
    callerCredentialId: string;
    reason: "register" | "assignment";
    assignmentId?: string;
    actor: Actor;
  },
): Promise<{ credential: string }> {
  const credential = await rotateAgentToken(db, params);
  await audit(
    db,
    params.actor,
    "agent.rotate_credential",
    { kind: "vm", id: params.vmId },
    {
      reason: params.reason,
      ...(params.assignmentId ? { assignmentId: params.assignmentId } : {}),
    },
  );
  return { credential };
}

const sameStrings = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Whether a heartbeat must be written at once: anything the pool, the admins or the audit log
 * act on. What is left (fresh GPU readings, the heartbeat time) may wait for the next flush.
 */
function isMaterial(
  before: Vm,
  input: HeartbeatInput,
  health: { healthy: boolean; reasons: string[] },
): boolean {
  if (input.shuttingDown || (input.backlog?.length ?? 0) > 0) return true;
  if (before.lastHeartbeatAt === null) return true;
  // The agent sends boot timings only when a milestone changed: admins watch the boot.
  if (input.bootTimings) return true;
  // Readiness is sent only when it changed, and it may bring the VM into service.
  if (input.readiness) return true;
  if (before.healthy !== health.healthy || !sameStrings(before.healthReasons, health.reasons))
    return true;
  if (before.inUse !== input.inUse) return true;
  const idle = input.idleSince ? new Date(input.idleSince).getTime() : null;
  if ((before.idleSince?.getTime() ?? null) !== idle) return true;
  // The set of GPUs or their own verdicts changed (the readings themselves are not material).
  if (before.gpus.length !== input.gpus.length) return true;
  return input.gpus.some((g, i) => {
    const b = before.gpus[i];
    return !b || b.index !== g.index || b.uuid !== g.uuid || b.healthy !== g.healthy;
  });
}

/**
 * A heartbeat answers pending commands and records the latest readings. A material change
 * (health flip or new reasons, in-use or idle change, goodbye, backlog, new GPUs, pending
 * commands) is one UPDATE at once, with its audit rows; otherwise the readings wait in the
 * process's buffer for the next multi-row flush (server/domain/heartbeat-buffer.ts).
 */
export async function recordHeartbeat(
  db: DbOrTx,
  input: HeartbeatInput,
  settings: AgentSettings,
  actor: Actor,
  /** The VM as read with the agent's token in the same request (saves a round trip). */
  loaded?: Vm & { expectedGpus: number },
): Promise<AgentReply> {
  const before = loaded?.id === input.vmId ? loaded : await loadVm(db, input.vmId);
  if (before.bootId !== input.bootId) {
    // The server has not seen this boot: the agent must register first.
    return reply(db, before, settings, true);
  }
  const health = healthVerdict(before, input);
  if (input.shuttingDown) {
    // Going away (reboot, upgrade, power-off): out of the pool until it registers again.
    health.healthy = false;
    health.reasons = [...health.reasons, SHUTTING_DOWN];
  }
  const now = new Date();
  const flushMs = settings.heartbeatFlushMs ?? DEFAULT_HEARTBEAT_FLUSH_MS;
  const buffer = heartbeatBuffer(
    db,
    {
      flushMs: Math.max(1, flushMs),
      sampleIntervalS: settings.gpuSampleIntervalS ?? DEFAULT_GPU_SAMPLE_INTERVAL_S,
    },
    SHUTTING_DOWN,
  );
  if (!input.shuttingDown) buffer.sample(input.vmId, input.gpus, now);

  if (flushMs > 0 && !isMaterial(before, input, health)) {
    const commands = await commandsFor(db, before);
    if (commands.length === 0) {
      buffer.put(input.vmId, input.bootId, input.gpus, now);
      return {
        vmId: before.id,
        state: before.state,
        heartbeatIntervalS: settings.heartbeatIntervalS,
        commands,
        reRegister: false,
      };
    }
  }

  // Once an agent has said goodbye for this boot, only a new registration brings the VM back:
  // a heartbeat that was in flight when it stopped can land after the goodbye and must not
  // mark the VM healthy again. The guard is in the UPDATE so the two requests cannot race.
  buffer.drop(input.vmId);
  const [vm] = await db
    .update(vms)
    .set({
      gpus: input.gpus,
      healthy: health.healthy,
      healthReasons: health.reasons,
      inUse: input.inUse,
      idleSince: input.idleSince ? new Date(input.idleSince) : null,
      lastHeartbeatAt: sql`now()`,
      ...(input.bootTimings
        ? { bootTimings: bootTimingsUpdate(input.bootId, input.bootTimings) }
        : {}),
    })
    .where(
      input.shuttingDown
        ? eq(vms.id, input.vmId)
        : and(
            eq(vms.id, input.vmId),
            sql`not (${vms.healthReasons} @> ${JSON.stringify([SHUTTING_DOWN])}::jsonb)`,
          ),
    )
    .returning();
  if (!vm) return reply(db, before, settings, true);
  const served =
    input.readiness && !input.shuttingDown
      ? await bringIntoService(db, vm, actor, input.readiness)
      : vm;
  if (input.backlog && input.backlog.length > 0) await recordBacklog(db, vm, input, actor);
  if (input.shuttingDown) {
    await audit(db, actor, "agent.shutting_down", { kind: "vm", id: vm.id }, {});
  }
  if (before.healthy !== health.healthy) {
    await audit(
      db,
      actor,
      health.healthy ? "vm.healthy" : "vm.unhealthy",
      { kind: "vm", id: vm.id },
      { reasons: health.reasons },
    );
  }
  return reply(db, served, settings);
}

export const SHUTTING_DOWN = "agent is shutting down";

/**
 * Readings an agent queued while it could not reach the server: one audit row summarising the
 * gap, with every period the VM reported itself unhealthy, so admins see what happened meanwhile.
 */
async function recordBacklog(db: DbOrTx, vm: Vm, input: HeartbeatInput, actor: Actor) {
  const backlog = input.backlog ?? [];
  const unhealthy = backlog
    .filter((b) => !b.healthy)
    .slice(0, 20)
    .map((b) => ({ at: b.at, reasons: b.reasons.slice(0, 5) }));
  await audit(
    db,
    actor,
    "agent.backlog",
    { kind: "vm", id: vm.id },
    {
      count: backlog.length,
      dropped: input.backlogDropped ?? 0,
      from: backlog[0]?.at,
      to: backlog.at(-1)?.at,
      unhealthy,
      maxTemperatureC: Math.max(
        ...backlog.map((b) => b.maxTemperatureC ?? Number.NEGATIVE_INFINITY),
      ),
    },
  );
}

/** Current commands without writing anything (long-poll answers). */
export async function pendingReply(
  db: DbOrTx,
  vmId: string,
  settings: AgentSettings,
): Promise<AgentReply> {
  return reply(db, await loadVm(db, vmId), settings);
}

/**
 * The agent reports a command done. A wipe acknowledgement is what returns a released VM to the
 * pool (or keeps it out, if an admin asked to drain it).
 */
export async function acknowledge(
  db: DbOrTx,
  input: AckInput,
  actor: Actor,
): Promise<{ ok: true }> {
  const vm = await loadVm(db, input.vmId);
  if (vm.assignmentId !== input.assignmentId) {
    throw new DomainError("STATE_CONFLICT", "That assignment is no longer current on this VM.", {
      state: vm.state,
    });
  }
  if (input.type === "connect") {
    await finishCrdHandoff(db, {
      vm,
      requestId: input.requestId as string,
      ok: input.ok,
      error: input.error,
      actor,
    });
    return { ok: true };
  }
  if (input.type === "assign") {
    if (!input.ok) {
      await audit(
        db,
        actor,
        "vm.assign_failed",
        { kind: "vm", id: vm.id },
        { error: input.error ?? "unknown error" },
      );
      return { ok: true };
    }
    await db.transaction(async (tx) => {
      const updated = await tx
        .update(vms)
        .set({ assignmentAckedId: input.assignmentId })
        .where(sql`${vms.id} = ${vm.id} AND ${vms.assignmentId} = ${input.assignmentId}`)
        .returning({ id: vms.id });
      if (updated.length > 0) {
        await audit(
          tx,
          actor,
          "vm.assignment_delivered",
          { kind: "vm", id: vm.id },
          { assignmentId: input.assignmentId },
        );
      }
    });
    return { ok: true };
  }

  if (vm.state !== "releasing") {
    throw new DomainError(
      "STATE_CONFLICT",
      `This VM is ${vm.state}; there is no wipe to acknowledge.`,
      {
        state: vm.state,
      },
    );
  }
  if (input.archive) await recordArchive(db, vm, input.archive, actor);
  if (!input.ok) {
    await transition(db, {
      vmId: vm.id,
      from: "releasing",
      to: "failed",
      actor,
      action: "vm.wipe_failed",
      details: { error: input.error ?? "unknown error" },
    });
    return { ok: true };
  }
  await wipeAcknowledged(db, vm, actor);
  await db.update(vms).set({ assignmentAckedId: null }).where(eq(vms.id, vm.id));
  return { ok: true };
}
