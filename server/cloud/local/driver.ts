import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, createWriteStream, mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { and, asc, eq, notInArray } from "drizzle-orm";
import { issueAgentToken, revokeAgentTokens } from "../../auth/agent-tokens";
import type { Db } from "../../db/client";
import { type Fleet, type Vm, vms } from "../../db/schema";
import { systemActor, transition } from "../../domain/vm-state";
import type { Logger } from "../../log";
import { type DriverRun, type FleetDriver, type InstanceInfo, throwIfAborted } from "../driver";
import { localConfigOf } from "./config";

export type LocalDriverOptions = {
  db: Db;
  /** Where the agents reach the server, e.g. http://127.0.0.1:3000. */
  serverUrl: string;
  /** Repository root (agent/ lives under it). */
  rootDir: string;
  /** Per-VM folders (agent logs, simulated home directories). */
  stateDir: string;
  heartbeatIntervalS: number;
  /**
   * "unix": each assignment gets a real throw-away Unix account, as on cloud VMs (the agents run
   * as this process's user, so it must be root with useradd). Default "simulated": a home folder
   * in the state dir, nothing touched outside it.
   */
  researchAccounts?: "simulated" | "unix";
  log: Logger;
};

const GONE = ["terminated", "terminating", "failed"] as const;

/**
 * The local driver: each "VM" is a real agent process on this machine with a simulated GPU, so
 * the whole loop (register, heartbeat, claim, wipe) runs without a cloud account.
 */
export class LocalFleetDriver implements FleetDriver {
  readonly name = "local" as const;
  private readonly procs = new Map<string, ChildProcess>();
  private closing = false;
  /** Per-fleet queue: an operation and the periodic restart never interleave on one fleet. */
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(private readonly o: LocalDriverOptions) {}

  private serialize<T>(fleetId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(fleetId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    this.chains.set(
      fleetId,
      next.catch(() => undefined),
    );
    return next;
  }

  apply(fleet: Fleet, run?: DriverRun): Promise<void> {
    return this.serialize(fleet.id, () => this.applyNow(fleet, run));
  }

  private async applyNow(fleet: Fleet, run?: DriverRun): Promise<void> {
    const { db } = this.o;
    let live = await db
      .select()
      .from(vms)
      .where(and(eq(vms.fleetId, fleet.id), notInArray(vms.state, [...GONE])))
      .orderBy(asc(vms.createdAt), asc(vms.name));

    // Scale up: new rows named <fleet>-<n>, filling gaps first.
    const taken = new Set(live.map((v) => v.name));
    const toCreate: string[] = [];
    for (let i = 1; live.length + toCreate.length < fleet.desiredSize; i++) {
      const name = `${fleet.name}-${i}`;
      if (!taken.has(name)) toCreate.push(name);
    }
    if (toCreate.length > 0) {
      run?.log(`creating ${toCreate.length} VM(s): ${toCreate.join(", ")}`);
      await db
        .insert(vms)
        .values(
          toCreate.map((name) => ({ fleetId: fleet.id, name, state: "provisioning" as const })),
        )
        .onConflictDoNothing();
      live = await db
        .select()
        .from(vms)
        .where(and(eq(vms.fleetId, fleet.id), notInArray(vms.state, [...GONE])))
        .orderBy(asc(vms.createdAt), asc(vms.name));
    }

    // Scale down: unheld VMs first, newest first.
    const excess = live.length - fleet.desiredSize;
    if (excess > 0) {
      const victims = [...live]
        .sort((a, b) => Number(!!a.holderId) - Number(!!b.holderId) || b.name.localeCompare(a.name))
        .slice(0, excess);
      for (const vm of victims) {
        throwIfAborted(run);
        run?.log(`terminating ${vm.name} (scale down to ${fleet.desiredSize})`);
        await this.terminate(vm);
      }
      live = live.filter((v) => !victims.includes(v));
    }

    const total = live.length;
    let done = live.filter((vm) => this.procs.has(vm.id)).length;
    run?.progress({ done, total });
    for (const vm of live) {
      if (this.procs.has(vm.id)) continue;
      throwIfAborted(run);
      await this.boot(fleet, vm);
      done += 1;
      run?.log(`started agent for ${vm.name}`);
      run?.progress({ done, total });
    }
    run?.log(`fleet ${fleet.name}: ${total} VM(s) running`);
  }

  terminateVm(fleet: Fleet, vm: Vm, run?: DriverRun): Promise<void> {
    return this.serialize(fleet.id, async () => {
      run?.log(`terminating ${vm.name}`);
      await this.terminate(vm);
      run?.log(`${vm.name} terminated`);
    });
  }

  rebootVm(fleet: Fleet, vm: Vm, run?: DriverRun): Promise<void> {
    return this.serialize(fleet.id, async () => {
      const moved = await transition(this.o.db, {
        vmId: vm.id,
        to: "rebooting",
        actor: systemActor,
        action: "driver.reboot",
      });
      run?.log(`rebooting ${vm.name}: stopping its agent`);
      await this.kill(vm.id);
      await this.boot(fleet, moved);
      run?.log(`${vm.name}: agent started again; it registers and comes back`);
    });
  }

  private async boot(fleet: Fleet, vm: Vm): Promise<void> {
    const token = await issueAgentToken(this.o.db, vm.id);
    const dir = path.join(this.o.stateDir, vm.name);
    mkdirSync(dir, { recursive: true });
    // A token file (not the environment) lets the agent take over rotated tokens.
    const tokenFile = path.join(dir, "agent.token");
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    chmodSync(tokenFile, 0o600);
    const logFile = createWriteStream(path.join(dir, "agent.log"), { flags: "a" });
    // The fleet's startup script, run by the simulated boot as a cloud VM's bootstrap runs it.
    const startup = localConfigOf(fleet.config);
    const scriptFile = path.join(dir, "startup.sh");
    if (startup.startupScript?.trim()) writeFileSync(scriptFile, startup.startupScript);
    else rmSync(scriptFile, { force: true });
    const child = spawn(
      process.execPath,
      ["--import", "tsx", path.join(this.o.rootDir, "agent/src/main.ts")],
      {
        cwd: this.o.rootDir,
        env: {
          PATH: process.env.PATH,
          NODE_ENV: process.env.NODE_ENV,
          LABLINK_SERVER_URL: this.o.serverUrl,
          LABLINK_AGENT_TOKEN_FILE: tokenFile,
          LABLINK_VM_ID: vm.id,
          LABLINK_SIMULATE_GPU: `${fleet.gpuModel ?? "Simulated GPU"}:${fleet.gpuCount}`,
          LABLINK_STATE_DIR: dir,
          // The stand-in that records what it was given: a local VM has no Chrome Remote Desktop.
          LABLINK_CRD_START_HOST: path.join(this.o.rootDir, "agent/dev/fake-start-host"),
          LABLINK_HEARTBEAT_S: String(this.o.heartbeatIntervalS),
          // Plays a short cloud-init run and container start in the state dir, so the dashboard
          // has boot timings and cloud-init/container log lines for local VMs too.
          LABLINK_SIMULATE_BOOT: "1",
          ...(startup.startupScript?.trim() ? { LABLINK_SIMULATE_STARTUP_SCRIPT: scriptFile } : {}),
          LABLINK_SIMULATE_STARTUP_ON_ERROR: startup.startupOnError,
          ...(this.o.researchAccounts === "unix"
            ? { LABLINK_RESEARCH_ACCOUNTS: "per-assignment" }
            : {}),
          LOG_LEVEL: process.env.LABLINK_AGENT_LOG_LEVEL ?? "info",
        },
        // The IPC channel lets the agent notice if this worker dies, so no agent is orphaned.
        stdio: ["ignore", "pipe", "pipe", "ipc"],
      },
    );
    child.stdout?.pipe(logFile);
    child.stderr?.pipe(logFile);
    this.procs.set(vm.id, child);
    child.on("exit", (code, signal) => {
      this.procs.delete(vm.id);
      if (!this.closing) this.o.log.warn({ vm: vm.name, code, signal }, "local agent exited");
    });
    if (vm.state === "provisioning") {
      await transition(this.o.db, {
        vmId: vm.id,
        from: "provisioning",
        to: "booting",
        actor: systemActor,
        action: "driver.boot",
        patch: { providerId: `local:${child.pid}` },
      });
    } else {
      await this.o.db
        .update(vms)
        .set({ providerId: `local:${child.pid}` })
        .where(eq(vms.id, vm.id));
    }
    this.o.log.info({ vm: vm.name, pid: child.pid }, "local agent started");
  }

  private async terminate(vm: Vm): Promise<void> {
    // A retried run may find the VM already terminating (the earlier run died half-way).
    const [current] = await this.o.db.select().from(vms).where(eq(vms.id, vm.id));
    if (!current || current.state === "terminated") return;
    const moved =
      current.state === "terminating"
        ? current
        : await transition(this.o.db, {
            vmId: vm.id,
            to: "terminating",
            actor: systemActor,
            action: "driver.terminate",
          });
    await this.kill(vm.id);
    await revokeAgentTokens(this.o.db, vm.id);
    await transition(this.o.db, {
      vmId: moved.id,
      from: "terminating",
      to: "terminated",
      actor: systemActor,
      action: "driver.terminate",
    });
  }

  destroy(fleet: Fleet, run?: DriverRun): Promise<void> {
    return this.serialize(fleet.id, async () => {
      const live = await this.o.db
        .select()
        .from(vms)
        .where(and(eq(vms.fleetId, fleet.id), notInArray(vms.state, ["terminated"])));
      let done = 0;
      run?.progress({ done, total: live.length });
      for (const vm of live) {
        throwIfAborted(run);
        await this.terminate(vm);
        done += 1;
        run?.log(`terminated ${vm.name}`);
        run?.progress({ done, total: live.length });
      }
    });
  }

  async describe(fleet: Fleet): Promise<InstanceInfo[]> {
    const rows = await this.o.db.select().from(vms).where(eq(vms.fleetId, fleet.id));
    return rows
      .filter((vm) => this.procs.has(vm.id))
      .map((vm) => ({ vmName: vm.name, providerId: vm.providerId ?? "", running: true }));
  }

  private kill(vmId: string, graceMs = 3_000): Promise<void> {
    const child = this.procs.get(vmId);
    if (!child || child.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      child.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill("SIGTERM");
    });
  }

  runningCount(): number {
    return this.procs.size;
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.procs.keys()].map((id) => this.kill(id)));
  }
}
