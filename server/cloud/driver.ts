import type { Fleet, FleetDriverName } from "../db/schema";

/** What the cloud (or this machine) says exists for a fleet. */
export type InstanceInfo = { vmName: string; providerId: string; running: boolean };

/**
 * One interface for every place VMs can live: this machine (local), Terraform-managed EC2, and
 * bring-your-own machines. Drivers are idempotent: apply twice leaves the world as apply once.
 */
export interface FleetDriver {
  readonly name: FleetDriverName;
  /** Make the fleet's VMs match its desired size. */
  apply(fleet: Fleet): Promise<void>;
  /** Tear down every VM of the fleet. */
  destroy(fleet: Fleet): Promise<void>;
  /** What actually exists, for drift reconciliation. */
  describe(fleet: Fleet): Promise<InstanceInfo[]>;
  /** Release local resources (child processes, clients) when the worker stops. */
  close(): Promise<void>;
}
