import type { Fleet, FleetDriverName, OperationProgress, Vm } from "../db/schema";

/** What the cloud (or this machine) says exists for a fleet. */
export type InstanceInfo = {
  vmName: string;
  /** The LabLink VM id the instance was created for (tag lablink:vm), when known. */
  vmId?: string;
  providerId: string;
  running: boolean;
  /** Provider state when known (EC2: pending, running, stopping, stopped, shutting-down, terminated). */
  state?: string;
  /** Addresses when the provider reports them (EC2: null while stopped; new after a start). */
  publicIp?: string | null;
  privateIp?: string | null;
};

/**
 * The operation a driver call belongs to: where its log lines go, how it reports progress, and
 * the signal that says "stop now" (cancel, or the worker shutting down). All optional, so the
 * periodic local apply can call a driver without an operation.
 */
export type DriverRun = {
  signal: AbortSignal;
  log: (line: string, level?: "info" | "warn" | "error") => void;
  progress: (p: OperationProgress) => void;
  /** Values to strip from every log line (tokens the driver handed to the cloud). */
  secret: (value: string) => void;
};

export const quietRun = (): DriverRun => ({
  signal: new AbortController().signal,
  log: () => {},
  progress: () => {},
  secret: () => {},
});

/**
 * One interface for every place VMs can live: this machine (local), Terraform-managed EC2, and
 * bring-your-own machines. Drivers are idempotent: apply twice leaves the world as apply once.
 */
export interface FleetDriver {
  readonly name: FleetDriverName;
  /** Make the fleet's VMs match its desired size. */
  apply(fleet: Fleet, run?: DriverRun): Promise<void>;
  /** Tear down every VM of the fleet. */
  destroy(fleet: Fleet, run?: DriverRun): Promise<void>;
  /** Remove one VM (the fleet's desired size drops by one). */
  terminateVm(fleet: Fleet, vm: Vm, run?: DriverRun): Promise<void>;
  /**
   * Restart one VM; its agent registers again. `hard`: a cold reboot from automatic recovery
   * (EC2: stop and start, a new host, rather than a reboot in place).
   */
  rebootVm(fleet: Fleet, vm: Vm, run?: DriverRun, options?: { hard?: boolean }): Promise<void>;
  /** What actually exists, for drift reconciliation. */
  describe(fleet: Fleet): Promise<InstanceInfo[]>;
  /** Release local resources (child processes, clients) when the worker stops. */
  close(): Promise<void>;
}

/** Thrown by drivers when the run's signal fired; the operation becomes cancelled (or requeued). */
export class RunAborted extends Error {
  constructor(message = "stopped on request") {
    super(message);
    this.name = "RunAborted";
  }
}

export function throwIfAborted(run: DriverRun | undefined) {
  if (run?.signal.aborted) throw new RunAborted();
}
