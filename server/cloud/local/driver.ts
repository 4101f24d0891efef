import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { chmodSync, createWriteStream, mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Fleet, Vm } from "../../db/schema";
import type { FleetLedger } from "../../domain/convergence";
import type { Logger } from "../../log";
import { type DriverRun, type FleetDriver, type InstanceInfo, throwIfAborted } from "../driver";
import { localConfigOf } from "./config";

export type LocalDriverOptions = {
  /** The domain's side of convergence: rows, tokens and state changes (fleetLedger(db)). */
  ledger: FleetLedger;
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

/**
 * An agent started with LABLINK_REBOOT=exit ends with this code to carry out a warm reboot
 * (REBOOT_EXIT_CODE of the agent protocol; the agent's contract test checks they match, and cloud/
 * does not import api/).
 */
export const LOCAL_REBOOT_EXIT_CODE = 75;

/**
 * The local driver: each "VM" is a real agent process on this machine with a simulated GPU, so
 * the whole loop (register, heartbeat, claim, wipe) runs without a cloud account.
 */
export class LocalFleetDriver implements FleetDriver {
  readonly name = "local" as const;
  private readonly procs = new Map<string, ChildProcess>();
  /** VM id → name and fleet of each running agent, for describe(). */
  private readonly running = new Map<string, { name: string; fleetId: string }>();
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
    const { ledger } = this.o;
    const plan = await ledger.converge(fleet, { observed: await this.describe(fleet) });
    if (plan.created.length > 0) {
      run?.log(`creating ${plan.created.length} VM(s): ${plan.created.join(", ")}`);
    }
    for (const vm of plan.leaving) {
      throwIfAborted(run);
      run?.log(`terminating ${vm.name} (scale down to ${fleet.desiredSize})`);
      await this.terminate(vm);
    }

    const live = plan.keep.filter((vm) => vm.state !== "failed");
    const total = live.length;
    let done = total - plan.launch.length;
    run?.progress({ done, total });
    for (const vm of plan.launch) {
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
      // A VM stuck in a reboot (automatic recovery's cold reboot) is rebooted again as it is.
      const moved = await this.o.ledger.rebooting(vm.id);
      run?.log(`rebooting ${vm.name}: stopping its agent`);
      await this.kill(vm.id);
      await this.boot(fleet, moved, { newBoot: true });
      run?.log(`${vm.name}: agent started again; it registers and comes back`);
    });
  }

  private async boot(fleet: Fleet, vm: Vm, opts: { newBoot?: boolean } = {}): Promise<void> {
    const token = await this.o.ledger.launchToken(vm.id);
    const dir = path.join(this.o.stateDir, vm.name);
    mkdirSync(dir, { recursive: true });
    // A reboot cures a simulated transient GPU fault (agent/src/gpu/probe.ts SimulatedProbe).
    if (opts.newBoot) rmSync(path.join(dir, "gpu-fault"), { force: true });
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
          // The browser desktop's terminal writes what is typed here (the end-to-end test reads it).
          LABLINK_DESKTOP_TYPING_FILE: path.join(dir, "desktop-typed.txt"),
          // The stand-in that records what it was given: a local VM has no Chrome Remote Desktop.
          LABLINK_CRD_START_HOST: path.join(this.o.rootDir, "agent/dev/fake-start-host"),
          LABLINK_HEARTBEAT_S: String(this.o.heartbeatIntervalS),
          // A simulated VM's reboot is a new agent process with a new boot id (see the exit handler).
          LABLINK_REBOOT: "exit",
          ...(opts.newBoot ? { LABLINK_BOOT_ID: randomUUID() } : {}),
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
    this.running.set(vm.id, { name: vm.name, fleetId: fleet.id });
    child.on("exit", (code, signal) => {
      // A restarted agent's old process may exit after its successor started.
      if (this.procs.get(vm.id) === child) {
        this.procs.delete(vm.id);
        this.running.delete(vm.id);
      }
      if (this.closing) return;
      if (code === LOCAL_REBOOT_EXIT_CODE) {
        // The agent carried out a warm reboot: the simulated machine comes back as a new boot.
        this.o.log.info({ vm: vm.name }, "local agent rebooting");
        void this.serialize(fleet.id, () => this.restartAfterReboot(fleet, vm.id)).catch((err) =>
          this.o.log.error({ err, vm: vm.name }, "local reboot failed"),
        );
        return;
      }
      this.o.log.warn({ vm: vm.name, code, signal }, "local agent exited");
    });
    await this.o.ledger.launched(vm.id, { providerId: `local:${child.pid}` });
    this.o.log.info({ vm: vm.name, pid: child.pid }, "local agent started");
  }

  private async restartAfterReboot(fleet: Fleet, vmId: string): Promise<void> {
    if (this.closing || this.procs.has(vmId)) return;
    const current = await this.o.ledger.vm(vmId);
    if (!current || ["terminated", "terminating", "failed"].includes(current.state)) return;
    await this.boot(fleet, current, { newBoot: true });
  }

  private async terminate(vm: Vm): Promise<void> {
    // A retried run may find the VM already terminating (the earlier run died half-way).
    await this.o.ledger.terminating(vm.id);
    await this.kill(vm.id);
    await this.o.ledger.terminated(vm.id);
  }

  destroy(fleet: Fleet, run?: DriverRun): Promise<void> {
    return this.serialize(fleet.id, async () => {
      const live = await this.o.ledger.rows(fleet.id);
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
    const out: InstanceInfo[] = [];
    for (const [vmId, r] of this.running) {
      if (r.fleetId !== fleet.id) continue;
      const pid = this.procs.get(vmId)?.pid;
      out.push({ vmName: r.name, vmId, providerId: `local:${pid ?? ""}`, running: true });
    }
    return out;
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

  /** Fleets with at least one agent running in this process. */
  fleetsWithAgents(): Set<string> {
    return new Set([...this.procs.keys()].map((id) => this.running.get(id)?.fleetId ?? ""));
  }

  /**
   * Stops this process's agents of one fleet and changes nothing in the database: another worker
   * now runs that fleet and starts agents of its own.
   */
  async stopAgents(fleetId: string): Promise<void> {
    const ids = [...this.procs.keys()].filter((id) => this.running.get(id)?.fleetId === fleetId);
    await Promise.all(ids.map((id) => this.kill(id)));
  }

  runningCount(): number {
    return this.procs.size;
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.procs.keys()].map((id) => this.kill(id)));
  }
}
