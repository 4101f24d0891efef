import postgres from "postgres";
import type { Fleet, Vm } from "../../db/schema";
import type { DriverRun, FleetDriver, InstanceInfo } from "../driver";
import type { LocalFleetDriver } from "./driver";

/**
 * First half of the two-int advisory-lock key "this worker runs local fleet X's agents" (the
 * second half is hashtext(fleet id)). Two-int keys never collide with bigint-keyed locks.
 */
export const LOCAL_FLEET_LOCK_CLASS = 0x4c4c4631; // "LLF1"

/**
 * Which local fleets this worker runs. A local VM is an agent process that lives in exactly one
 * worker, so with several workers each local fleet needs one owner: the worker that holds a
 * session-level advisory lock for it, on a connection of its own. The lock goes when the owner's
 * connection goes (the worker died or lost the database), and then another worker takes it at its
 * next `sync`; the dead owner's agents died with it (they watch their IPC channel).
 */
export class LocalFleetOwnership {
  private readonly sql: postgres.Sql;
  private readonly owned = new Set<string>();

  constructor(url: string) {
    // One connection, never recycled by the pool: recycling it would drop every lock.
    this.sql = postgres(url, {
      max: 1,
      idle_timeout: 0,
      max_lifetime: null,
      onnotice: () => {},
      connection: { application_name: "lablink-local-fleet-owner" },
    });
  }

  /** Fleets this worker owned at the last sync or claim. */
  ownedFleets(): ReadonlySet<string> {
    return this.owned;
  }

  private chain: Promise<unknown> = Promise.resolve();

  /** One sync or claim at a time: a sync must not let go of a fleet a claim has just taken. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** Holds or takes each fleet, checked in pg_locks (a reconnect silently loses them all). */
  private async take(fleetIds: string[]): Promise<Map<string, boolean>> {
    if (fleetIds.length === 0) return new Map();
    const rows = await this.sql<{ id: string; owned: boolean }[]>`
      SELECT id, CASE WHEN held THEN true
                      ELSE pg_try_advisory_lock(${LOCAL_FLEET_LOCK_CLASS}, hashtext(id)) END AS owned
      FROM (
        SELECT id, EXISTS (
          SELECT 1 FROM pg_locks l
          WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
            AND l.objsubid = 2
            AND l.classid = ${LOCAL_FLEET_LOCK_CLASS}::int4::oid
            AND l.objid = hashtext(id)::oid
        ) AS held
        FROM unnest(${fleetIds}::text[]) AS id
      ) s`;
    return new Map(rows.map((r) => [r.id, r.owned]));
  }

  /**
   * Takes every live local fleet (from `liveFleets`, read inside the lock) that no other worker
   * holds, keeps those already held, and lets go of fleets no longer live. Returns the fleets this
   * worker owns now.
   */
  sync(liveFleets: () => Promise<string[]>): Promise<Set<string>> {
    return this.exclusive(async () => {
      const ids = await liveFleets();
      for (const id of [...this.owned]) if (!ids.includes(id)) await this.release(id);
      const taken = await this.take(ids);
      this.owned.clear();
      for (const [id, owned] of taken) if (owned) this.owned.add(id);
      return new Set(this.owned);
    });
  }

  /** Owns `fleetId` after this call if no other worker does; true when this worker owns it. */
  claim(fleetId: string): Promise<boolean> {
    return this.exclusive(async () => {
      const owned = (await this.take([fleetId])).get(fleetId) === true;
      if (owned) this.owned.add(fleetId);
      else this.owned.delete(fleetId);
      return owned;
    });
  }

  private async release(fleetId: string): Promise<void> {
    this.owned.delete(fleetId);
    // Session locks stack; a claim may have taken this one more than once.
    for (let i = 0; i < 100; i++) {
      const [r] = await this.sql<{ unlocked: boolean }[]>`
        SELECT pg_advisory_unlock(${LOCAL_FLEET_LOCK_CLASS}, hashtext(${fleetId})) AS unlocked`;
      if (!r?.unlocked) break;
    }
  }

  async close(): Promise<void> {
    this.owned.clear();
    await this.sql.end({ timeout: 5 });
  }
}

/** Raised when another worker runs the fleet's agents. */
export class NotFleetOwner extends Error {
  constructor(fleetName: string) {
    super(`another worker runs the agents of local fleet ${fleetName}`);
    this.name = "NotFleetOwner";
  }
}

/**
 * The local driver as a worker with company uses it: every call that starts or stops agents
 * first makes sure this worker owns the fleet, so a second worker never starts a second set of
 * agents for the same VMs.
 */
export class OwnedLocalDriver implements FleetDriver {
  readonly name = "local" as const;

  constructor(
    readonly local: LocalFleetDriver,
    readonly ownership: LocalFleetOwnership,
  ) {}

  /** Whether this worker may run an operation on the fleet (takes it when nobody owns it). */
  mayRun(fleetId: string): Promise<boolean> {
    return this.ownership.claim(fleetId);
  }

  private async own(fleet: Fleet): Promise<void> {
    if (!(await this.ownership.claim(fleet.id))) throw new NotFleetOwner(fleet.name);
  }

  async apply(fleet: Fleet, run?: DriverRun): Promise<void> {
    await this.own(fleet);
    return this.local.apply(fleet, run);
  }

  async destroy(fleet: Fleet, run?: DriverRun): Promise<void> {
    await this.own(fleet);
    return this.local.destroy(fleet, run);
  }

  async terminateVm(fleet: Fleet, vm: Vm, run?: DriverRun): Promise<void> {
    await this.own(fleet);
    return this.local.terminateVm(fleet, vm, run);
  }

  async rebootVm(fleet: Fleet, vm: Vm, run?: DriverRun): Promise<void> {
    await this.own(fleet);
    return this.local.rebootVm(fleet, vm, run);
  }

  describe(fleet: Fleet): Promise<InstanceInfo[]> {
    return this.local.describe(fleet);
  }

  async close(): Promise<void> {
    // Agents first: the lock must outlive them, or a second worker could start theirs too early.
    await this.local.close();
    await this.ownership.close();
  }
}
