import { randomUUID } from "node:crypto";
import { and, eq, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { type BootTimings, fleets, type Vm, vms } from "../db/schema";
import { LOG_BATCH_MAX, LOG_LINE_MAX, type LogLine } from "../protocol/agent";
import {
  type AgentSettings,
  bringIntoService,
  DEFAULT_GPU_SAMPLE_INTERVAL_S,
  DEFAULT_HEARTBEAT_FLUSH_MS,
  SHUTTING_DOWN,
} from "./agents";
import { audit } from "./audit";
import { DomainError } from "./errors";
import { finishCrdHandoff, pendingCrdHandoff } from "./handoff";
import { heartbeatBuffer } from "./heartbeat-buffer";
import { replaceReleased } from "./replacement";
import { recordLogs } from "./vm-logs";
import { type Actor, transition } from "./vm-state";

/**
 * VMs running an original LabLink client image (docs/original-api.md): the same domain steps as
 * the LabLink agent's procedures (register, heartbeat, health, in-use, logs, boot timings, the
 * Chrome Remote Desktop hand-off), fed from what that client reports. The client sends no GPU
 * readings and no boot id, so those are not taken from it: the boot id is made here when the
 * client says it is starting, and health is its own verdict ("Healthy", "Unhealthy", "N/A").
 */

/** What `vms.agent_version` shows for a VM served through the original client API. */
export const CLIENT_AGENT_VERSION = "lablink-client (original API)";
export const NO_HEALTH_YET = "no GPU health report from the client yet";
export const CLIENT_GPU_UNHEALTHY = "the client reports its GPU unhealthy";
export const CLIENT_GPU_NA = "the client cannot read its GPU (N/A)";

/** The status names the original client sends; anything else is accepted and ignored. */
export const CLIENT_STATUSES = [
  "initializing",
  "running",
  "error",
  "rebooting",
  "unknown",
] as const;
export type ClientStatus = (typeof CLIENT_STATUSES)[number];

/** The original's status for a VM, read from LabLink's state (what GET /api/vm-status answers). */
export function clientStatusOf(vm: Pick<Vm, "state" | "healthReasons">): ClientStatus {
  if (vm.healthReasons.includes(SHUTTING_DOWN)) return "rebooting";
  switch (vm.state) {
    case "provisioning":
    case "booting":
      return "initializing";
    case "ready":
    case "claimed":
    case "draining":
    case "releasing":
      return "running";
    case "rebooting":
      return "rebooting";
    case "failed":
      return "error";
    default:
      return "unknown";
  }
}

async function fleetOf(db: DbOrTx, fleetId: string) {
  const [fleet] = await db
    .select({ config: fleets.config, gpuCount: fleets.gpuCount })
    .from(fleets)
    .where(eq(fleets.id, fleetId));
  if (!fleet) throw new DomainError("NOT_FOUND", "VM not found.");
  return fleet;
}

/** The fleet's on-error policy for a failed start-up (terraform fleets' `startupOnError`). */
async function onErrorPolicy(db: DbOrTx, fleetId: string): Promise<"fail" | "continue"> {
  const { config } = await fleetOf(db, fleetId);
  return config.startupOnError === "fail" ? "fail" : "continue";
}

/**
 * The client (re)starts: a new boot, as `agent.register` records one. Health waits for the
 * client's first report; the VM leaves `provisioning` (it is up).
 */
async function startBoot(db: DbOrTx, vm: Vm, actor: Actor): Promise<Vm> {
  const bootId = `client-${randomUUID()}`;
  const [updated] = (await db
    .update(vms)
    .set({
      bootId,
      agentVersion: CLIENT_AGENT_VERSION,
      healthy: false,
      healthReasons: [NO_HEALTH_YET],
      lastHeartbeatAt: sql`now()`,
      bootTimings: { bootId, registeredAt: new Date().toISOString() },
      // After a reboot the holder's setup is gone (the same rule as agent.register).
      assignmentAckedId: null,
    })
    .where(eq(vms.id, vm.id))
    .returning()) as [Vm];
  await audit(
    db,
    actor,
    "agent.register",
    { kind: "vm", id: vm.id },
    {
      bootId,
      agentVersion: CLIENT_AGENT_VERSION,
      rebooted: vm.bootId !== null,
    },
  );
  if (updated.state === "provisioning") {
    return transition(db, {
      vmId: vm.id,
      from: "provisioning",
      to: "booting",
      actor,
      action: "agent.register",
    });
  }
  return updated;
}

const registered = (vm: Vm) => vm.bootId !== null && vm.agentVersion === CLIENT_AGENT_VERSION;

/**
 * A released VM cannot be wiped by the original client (it has no such command): it is replaced
 * instead, like a released VM of a fleet whose researchers have root. A busy fleet leaves it
 * releasing until the client's next call.
 */
export async function replaceIfReleased(db: DbOrTx, vm: Vm, actor: Actor): Promise<void> {
  if (vm.state !== "releasing") return;
  try {
    await replaceReleased(
      db,
      vm,
      actor,
      "original LabLink client image: it cannot wipe, so released VMs are replaced",
    );
  } catch (e) {
    if (!(e instanceof DomainError)) throw e;
  }
}

/** POST /api/vm-status: the client's container start-up status. */
export async function reportClientStatus(
  db: DbOrTx,
  p: { vm: Vm; status: string; actor: Actor },
): Promise<void> {
  let vm = p.vm;
  if (vm.state === "terminating" || vm.state === "terminated") return;
  switch (p.status) {
    case "initializing":
      await startBoot(db, vm, p.actor);
      return;
    case "error":
      if ((await onErrorPolicy(db, vm.fleetId)) === "fail") {
        if (vm.state === "failed") return;
        await transition(db, {
          vmId: vm.id,
          to: "failed",
          actor: p.actor,
          action: "vm.startup_failed",
          details: { reason: "the client image reported a start-up error", onError: "fail" },
        });
        return;
      }
      await recordLogs(db, {
        vmId: vm.id,
        bootId: vm.bootId ?? "client",
        lines: [
          {
            at: new Date().toISOString(),
            source: "agent",
            level: "error",
            message:
              "the client image reported a start-up error; the fleet's on-error policy is continue",
          },
        ],
      });
      break;
    case "running":
      break;
    case "rebooting":
      // Out of the pool until the client starts again (as an agent's goodbye; buffered
      // heartbeats never overwrite it).
      await db
        .update(vms)
        .set({ healthy: false, healthReasons: [SHUTTING_DOWN], lastHeartbeatAt: sql`now()` })
        .where(eq(vms.id, vm.id));
      await audit(db, p.actor, "agent.shutting_down", { kind: "vm", id: vm.id });
      return;
    default:
      return;
  }
  // running, or an error the fleet lets pass: the VM serves.
  if (vm.state === "releasing") return replaceIfReleased(db, vm, p.actor);
  if (!registered(vm) || vm.healthReasons.includes(SHUTTING_DOWN)) {
    vm = await startBoot(db, vm, p.actor);
  }
  if (vm.state === "failed") return;
  await bringIntoService(db, vm, p.actor);
}

/** POST /api/gpu_health: the client's own verdict on its GPU. */
export async function reportGpuHealth(
  db: DbOrTx,
  p: { vm: Vm; gpuStatus: "Healthy" | "Unhealthy" | "N/A"; actor: Actor },
): Promise<void> {
  const { gpuCount } = await fleetOf(db, p.vm.fleetId);
  // N/A is what the client says without a GPU: fine on a fleet that has none.
  const healthy = p.gpuStatus === "Healthy" || (p.gpuStatus === "N/A" && gpuCount === 0);
  const reasons = healthy
    ? []
    : [p.gpuStatus === "Unhealthy" ? CLIENT_GPU_UNHEALTHY : CLIENT_GPU_NA];
  // A client that said it is rebooting comes back only by starting again (vm-status).
  const [vm] = await db
    .update(vms)
    .set({ healthy, healthReasons: reasons, lastHeartbeatAt: sql`now()` })
    .where(
      and(
        eq(vms.id, p.vm.id),
        sql`not (${vms.healthReasons} @> ${JSON.stringify([SHUTTING_DOWN])}::jsonb)`,
      ),
    )
    .returning({ id: vms.id });
  if (vm && p.vm.healthy !== healthy) {
    await audit(
      db,
      p.actor,
      healthy ? "vm.healthy" : "vm.unhealthy",
      { kind: "vm", id: vm.id },
      {
        reasons,
      },
    );
  }
}

/** POST /api/update_inuse_status: someone is (not) using the VM; idleness counts from now. */
export async function reportInUse(db: DbOrTx, p: { vm: Vm; inUse: boolean }): Promise<void> {
  await db
    .update(vms)
    .set({
      inUse: p.inUse,
      idleSince: p.inUse ? null : sql`coalesce(${vms.idleSince}, now())`,
      lastHeartbeatAt: sql`now()`,
    })
    .where(eq(vms.id, p.vm.id));
}

/** POST /api/heartbeat: alive. Buffered with the agents' heartbeats (nothing material). */
export async function clientHeartbeat(
  db: DbOrTx,
  p: { vm: Vm; settings: AgentSettings; actor: Actor },
): Promise<void> {
  await replaceIfReleased(db, p.vm, p.actor);
  const flushMs = p.settings.heartbeatFlushMs ?? DEFAULT_HEARTBEAT_FLUSH_MS;
  if (flushMs > 0 && p.vm.bootId) {
    heartbeatBuffer(
      db,
      {
        flushMs: Math.max(1, flushMs),
        sampleIntervalS: p.settings.gpuSampleIntervalS ?? DEFAULT_GPU_SAMPLE_INTERVAL_S,
      },
      SHUTTING_DOWN,
    ).put(p.vm.id, p.vm.bootId, p.vm.gpus, new Date());
    return;
  }
  await db.update(vms).set({ lastHeartbeatAt: sql`now()` }).where(eq(vms.id, p.vm.id));
}

/** POST /api/vm-logs: `-docker` log groups are the container's log, the rest cloud-init's. */
export async function recordClientLogs(
  db: DbOrTx,
  p: { vm: Vm; logGroup: string; messages: string[] },
): Promise<{ accepted: number }> {
  const source = p.logGroup.endsWith("-docker") ? "container" : "cloud-init";
  const at = new Date().toISOString();
  let accepted = 0;
  for (let i = 0; i < p.messages.length; i += LOG_BATCH_MAX) {
    const lines: LogLine[] = p.messages.slice(i, i + LOG_BATCH_MAX).map((m) => ({
      at,
      source,
      level: "info",
      message: m.slice(0, LOG_LINE_MAX),
    }));
    if (lines.length === 0) continue;
    accepted += (await recordLogs(db, { vmId: p.vm.id, bootId: p.vm.bootId ?? "client", lines }))
      .accepted;
  }
  return { accepted };
}

export type ClientMetrics = {
  cloud_init_start?: number | null;
  cloud_init_end?: number | null;
  cloud_init_duration_seconds?: number | null;
  container_start?: number | null;
  container_end?: number | null;
  container_startup_duration_seconds?: number | null;
};

const iso = (epochS: number | null | undefined) =>
  epochS === null || epochS === undefined ? undefined : new Date(epochS * 1000).toISOString();

/** POST /api/vm-metrics: the boot timings, in the VM's boot record (vms.boot_timings). */
export async function recordClientTimings(
  db: DbOrTx,
  p: { vm: Vm; metrics: ClientMetrics },
): Promise<void> {
  const m = p.metrics;
  const end = (start?: number | null, stop?: number | null, seconds?: number | null) =>
    stop ?? (start != null && seconds != null ? start + seconds : undefined);
  const cloudInitEnd = end(m.cloud_init_start, m.cloud_init_end, m.cloud_init_duration_seconds);
  const containerEnd = end(
    m.container_start,
    m.container_end,
    m.container_startup_duration_seconds,
  );
  const reported: Partial<BootTimings> = Object.fromEntries(
    Object.entries({
      cloudInitStartedAt: iso(m.cloud_init_start),
      cloudInitFinishedAt: iso(cloudInitEnd),
      cloudInitStatus: cloudInitEnd !== undefined ? "done" : undefined,
      containerStartedAt: iso(m.container_start),
      containerReadyAt: iso(containerEnd),
    }).filter(([, v]) => v !== undefined),
  );
  const bootId = p.vm.bootId ?? "client";
  const stored = p.vm.bootTimings?.bootId === bootId ? p.vm.bootTimings : null;
  await db
    .update(vms)
    .set({ bootTimings: { ...(stored ?? {}), ...reported, bootId } })
    .where(eq(vms.id, p.vm.id));
}

/** The command Google's headless page shows, rebuilt around the code LabLink kept. */
export function crdCommand(code: string): string {
  return `DISPLAY= /opt/google/chrome-remote-desktop/start-host --code="${code}" --redirect-url="https://remotedesktop.google.com/_/oauthredirect" --name=$(hostname)`;
}

/**
 * The researcher's Chrome Remote Desktop hand-off waiting for this VM, if any (POST
 * /vm_startup). The code passed CRD_CODE (no quotes, no shell characters) when it was stored.
 */
export async function startupCommand(
  db: DbOrTx,
  vmId: string,
): Promise<{ vm: Vm; requestId: string; pin: string; command: string } | null> {
  const [vm] = await db.select().from(vms).where(eq(vms.id, vmId));
  if (!vm) throw new DomainError("NOT_FOUND", "VM not found.");
  if (vm.state !== "claimed" && vm.state !== "draining") return null;
  const pending = await pendingCrdHandoff(db, vm);
  return pending
    ? { vm, requestId: pending.requestId, pin: pending.pin, command: crdCommand(pending.code) }
    : null;
}

/**
 * The command reached the client: the original has no acknowledgement, so delivery is the
 * hand-off's success, and the sealed code and PIN are erased.
 */
export async function startupDelivered(
  db: DbOrTx,
  p: { vm: Vm; requestId: string; actor: Actor },
): Promise<void> {
  await finishCrdHandoff(db, { vm: p.vm, requestId: p.requestId, ok: true, actor: p.actor });
}
