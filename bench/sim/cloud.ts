import { and, asc, eq, notInArray } from "drizzle-orm";
import type { FleetDriver } from "../../server/cloud/driver";
import type { Db } from "../../server/db/client";
import { type Fleet, type Vm, vms } from "../../server/db/schema";
import {
  type AgentSettings,
  acknowledge,
  recordHeartbeat,
  registerAgent,
} from "../../server/domain/agents";
import { type Actor, systemActor, transition } from "../../server/domain/vm-state";

const GONE = ["terminated", "terminating", "failed"] as const;
export const agentActor = (vmId: string): Actor => ({ kind: "agent", id: vmId });

/** The sim's agents write every heartbeat at once (no buffer timer) and take no GPU samples. */
export const SIM_AGENT_SETTINGS: AgentSettings = {
  heartbeatIntervalS: 60,
  heartbeatFlushMs: 0,
  gpuSampleIntervalS: 0,
};

const gpu = {
  index: 0,
  uuid: null,
  name: "NVIDIA A10G",
  temperatureC: 40,
  utilizationPct: 0,
  memoryUsedMiB: 0,
  memoryTotalMiB: 24_000,
  powerDrawW: 60,
  healthy: true,
  reasons: [],
};

/**
 * The cloud, in virtual time: a fleet driver whose machines are rows plus a boot time drawn from
 * `bootMinutes`. It does what the local driver does today (a driver that creates its rows; the
 * fleet convergence of issue #11 §1 will take that over), with one difference that matters for
 * the measurement: scaling down never takes a VM someone holds. A fleet over its size gives up
 * held VMs only when their holders are done (`converge` runs every tick), so no work is lost to a
 * scale-down.
 */
export class SimCloud implements FleetDriver {
  readonly name = "local" as const;
  /** When each machine's agent comes up (virtual minutes). */
  private readonly bootAt = new Map<string, number>();
  private seq = 0;
  /** Machines whose agent died: no reports until the machine is rebooted or replaced. */
  private readonly broken = new Set<string>();
  /** Broken machines that came back from a reboot. */
  recovered = 0;
  now = 0;

  constructor(
    private readonly db: Db,
    private readonly bootMinutes: () => number,
  ) {}

  private live(fleetId: string) {
    return this.db
      .select()
      .from(vms)
      .where(and(eq(vms.fleetId, fleetId), notInArray(vms.state, [...GONE])))
      .orderBy(asc(vms.createdAt), asc(vms.name));
  }

  async apply(fleet: Fleet): Promise<void> {
    const live = await this.live(fleet.id);
    const missing = fleet.desiredSize - live.length;
    if (missing > 0) {
      const rows = await this.db
        .insert(vms)
        .values(
          Array.from({ length: missing }, () => ({
            fleetId: fleet.id,
            name: `${fleet.name}-${++this.seq}`,
            state: "provisioning" as const,
          })),
        )
        .returning({ id: vms.id });
      for (const r of rows) this.bootAt.set(r.id, this.now + this.bootMinutes());
      return;
    }
    // Scale down: machines nobody can be on first (still booting, then ready), newest first.
    const rank = (v: Vm) =>
      v.holderId || v.state === "releasing" ? 2 : v.state === "ready" ? 1 : 0;
    const victims = live
      .filter((v) => rank(v) < 2)
      .sort((a, b) => rank(a) - rank(b) || b.name.localeCompare(a.name))
      .slice(0, -missing);
    for (const vm of victims) await this.terminate(vm);
  }

  private async terminate(vm: Vm) {
    await transition(this.db, {
      vmId: vm.id,
      to: "terminating",
      actor: systemActor,
      action: "driver.terminate",
    });
    await transition(this.db, {
      vmId: vm.id,
      from: "terminating",
      to: "terminated",
      actor: systemActor,
      action: "driver.terminated",
    });
    this.bootAt.delete(vm.id);
    this.broken.delete(vm.id);
  }

  breakAgent(vmId: string) {
    this.broken.add(vmId);
  }
  isBroken(vmId: string) {
    return this.broken.has(vmId);
  }

  /** Machines booting: the clock must go minute by minute until they are up. */
  busy(): boolean {
    return this.bootAt.size > 0;
  }

  async destroy(fleet: Fleet) {
    for (const vm of await this.live(fleet.id)) await this.terminate(vm);
  }
  async terminateVm(_fleet: Fleet, vm: Vm) {
    if (vm.state !== "terminated") await this.terminate(vm);
  }
  async rebootVm(_fleet: Fleet, vm: Vm) {
    await transition(this.db, {
      vmId: vm.id,
      to: "rebooting",
      actor: systemActor,
      action: "driver.reboot",
    });
    if (this.broken.delete(vm.id)) this.recovered++;
    this.bootAt.set(vm.id, this.now + this.bootMinutes());
  }
  async describe(fleet: Fleet) {
    return (await this.live(fleet.id)).map((v) => ({
      vmName: v.name,
      vmId: v.id,
      providerId: v.id,
      running: true,
    }));
  }
  async close() {}

  /**
   * One virtual minute of the machines: agents whose boot finished register (through the real
   * registration, which makes the VM ready, or gives it back to its holder after a reboot); wipes
   * asked for a minute ago are acknowledged; fleets over their size shed VMs that were freed.
   */
  async tick(now: number, fleets: Fleet[]): Promise<void> {
    this.now = now;
    for (const [vmId, at] of this.bootAt) {
      if (at > now) continue;
      this.bootAt.delete(vmId);
      await registerAgent(
        this.db,
        {
          vmId,
          bootId: `sim-${vmId}-${at}`,
          hostname: `sim-${vmId.slice(0, 8)}`,
          agentVersion: "sim",
          protocolVersion: 2,
          gpus: [gpu],
          health: { healthy: true, reasons: [] },
        },
        SIM_AGENT_SETTINGS,
        agentActor(vmId),
      );
    }
    const releasing = await this.db
      .select({ id: vms.id, assignmentId: vms.assignmentId })
      .from(vms)
      .where(eq(vms.state, "releasing"));
    for (const r of releasing) {
      if (!r.assignmentId) continue;
      await acknowledge(
        this.db,
        { vmId: r.id, type: "wipe", assignmentId: r.assignmentId, ok: true },
        agentActor(r.id),
      );
    }
    for (const f of fleets) if (f.status === "active") await this.apply(f);
  }

  /** A running agent's heartbeat: what its VM's holder is doing, as the agent would see it. */
  async heartbeat(vm: Vm, report: { inUse: boolean; idleSince: Date | null }) {
    if (!vm.bootId) return;
    await recordHeartbeat(
      this.db,
      {
        vmId: vm.id,
        bootId: vm.bootId,
        gpus: [gpu],
        health: { healthy: true, reasons: [] },
        inUse: report.inUse,
        idleSince: report.idleSince?.toISOString() ?? null,
      },
      SIM_AGENT_SETTINGS,
      agentActor(vm.id),
    );
  }

  /** The agent sets up a new holder's account and says so. */
  async acknowledgeAssignment(vm: Vm) {
    if (!vm.assignmentId) return;
    await acknowledge(
      this.db,
      { vmId: vm.id, type: "assign", assignmentId: vm.assignmentId, ok: true },
      agentActor(vm.id),
    );
  }
}
