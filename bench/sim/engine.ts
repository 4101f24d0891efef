import { and, eq, inArray, isNotNull, ne } from "drizzle-orm";
import pino from "pino";
import { createDatabase } from "../../server/db/client";
import { type Fleet, fleets, holdReminders, users, vms } from "../../server/db/schema";
import { claimVm, releaseVm } from "../../server/domain/allocation";
import { isDomainError } from "../../server/domain/errors";
import { releaseExpiredHolds } from "../../server/domain/hold-limits";
import { sendHoldReminders } from "../../server/domain/hold-reminders";
import { queuedOperationIds } from "../../server/domain/operations";
import { createFleet } from "../../server/domain/provisioning";
import { runRecovery } from "../../server/domain/recovery";
import {
  addRecurringSchedule,
  applyRecurringSchedules,
  recurringScheduleInput,
} from "../../server/domain/recurring-schedules";
import { runDueSchedules, scheduleScale } from "../../server/domain/schedules";
import { systemActor } from "../../server/domain/vm-state";
import { reconcileWarmPools, setWarmPool } from "../../server/domain/warm-pool";
import { executeOperation } from "../../server/jobs/operations";
import type { Logger } from "../../server/log";
import { installVirtualClock, setClock } from "./clock";
import { SimCloud } from "./cloud";
import { activeAt, between, inactiveSince, prng, type Trace, visitAt } from "./trace";

/** One way of running the fleet for the workshop. Minutes are virtual minutes after `startsAt`. */
export type Policy = {
  name: string;
  /** VMs asked for when the fleet is created (the static pool: all of them, for the whole time). */
  initialSize: number;
  /** Scheduled sizes: the session slots' recurring schedule, expanded for the trace's days. */
  schedule: { at: number; size: number }[];
  maxHoldMinutes: number | null;
  idleReleaseMinutes: number | null;
  /** Reminder mail this long before a limit releases a VM; 0: no reminders. */
  reminderLeadMinutes: number;
  /** The agent reports a VM idle after this long with nothing running (LABLINK_IDLE_AFTER_S). */
  agentIdleAfterMinutes: number;
  /** A warm pool (server/domain/warm-pool.ts): ready VMs kept beyond the held ones. */
  warmPool?: { desiredReady: number; maxSize: number };
  /** Recurring slots (server/domain/recurring-schedules.ts), UTC, setting the ready count. */
  recurring?: { rrule: string; startTime: string; endTime: string; size: number }[];
  /** Auto-recovery (server/domain/recovery.ts) with the fleet's default policy. */
  recovery?: boolean;
  /** Agents that die (stop reporting) at random times during the sessions. */
  injectedFailures?: number;
};

export type SimOptions = {
  /** A database the sim may own: migrated, nothing else in it. Its clock is installed here. */
  url: string;
  seed: number;
  /** A GPU VM's boot, from launch to its agent registering: uniform in [min, max] minutes. */
  bootMinutes: [number, number];
  /** Stop after this many minutes (tests); default the trace's horizon. */
  minutes?: number;
};

export type SimResult = {
  policy: string;
  paidGpuHours: number;
  idleGpuHours: number;
  inUseGpuHours: number;
  /** Seconds from needing a VM (an arrival, or a return after the VM was released) to having one. */
  waits: number[];
  /** Needs for a VM that ended (the visit ended) before one was assigned. */
  unserved: number;
  /** Releases the limits made, by limit. */
  policyReleases: { hold: number; idle: number };
  /** Limit releases without the holder's reminder sent first, plus held VMs taken otherwise. */
  releasesWithoutWarning: number;
  /** Ticks where the database or the sim saw one VM with two people, or one person with two VMs. */
  doubleHolds: number;
  peakVms: number;
  arrivals: number;
  /** Agents made to die, and how many of those VMs reported again later (after a recovery). */
  failures: { injected: number; recovered: number };
};

/** Minutes a step spans when nothing is going on (nights). */
const QUIET_STEP = 5;

/** Runs `fn` over `items`, at most `n` at a time (the pool has that many connections). */
async function inParallel<T>(items: T[], n: number, fn: (item: T) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

const silent = pino({ enabled: false }) as unknown as Logger;
const MINUTE = 60_000;

/** Replays `trace` under `policy` through the domain code against the database at `options.url`. */
export async function simulate(
  trace: Trace,
  policy: Policy,
  options: SimOptions,
): Promise<SimResult> {
  const start = new Date(trace.startsAt);
  await installVirtualClock(options.url, start);
  const database = createDatabase(options.url, { max: 4 });
  const { db, sql } = database;
  const rand = prng(options.seed);
  const cloud = new SimCloud(db, () =>
    between(rand, options.bootMinutes[0], options.bootMinutes[1]),
  );
  const at = (t: number) => new Date(start.getTime() + t * MINUTE);

  try {
    const people = trace.participants.filter((p) => !p.noShow);
    const userIds = new Map<string, string>();
    for (const p of people) {
      const [u] = await db
        .insert(users)
        .values({ name: p.id, email: `${p.id}@workshop.example.edu`, role: "researcher" })
        .returning({ id: users.id });
      if (u) userIds.set(p.id, u.id);
    }
    const { fleet } = await createFleet(
      db,
      {
        name: "workshop",
        driver: "local",
        instanceType: "g5.xlarge",
        gpuModel: "NVIDIA A10G",
        gpuCount: 1,
        size: policy.initialSize,
        maxHoldMinutes: policy.maxHoldMinutes,
        idleReleaseMinutes: policy.idleReleaseMinutes,
        config: {},
      },
      systemActor,
      {},
    );
    for (const s of policy.schedule)
      await scheduleScale(
        db,
        { fleetId: fleet.id, at: at(s.at), size: s.size, actor: systemActor },
        start,
      );

    const reminders =
      policy.reminderLeadMinutes > 0
        ? {
            mailer: { sendMail: async () => ({}) },
            from: "lablink@workshop.example.edu",
            publicUrl: "http://lablink.example.edu",
            leadMinutes: policy.reminderLeadMinutes,
          }
        : null;

    const result: SimResult = {
      policy: policy.name,
      paidGpuHours: 0,
      idleGpuHours: 0,
      inUseGpuHours: 0,
      waits: [],
      unserved: 0,
      policyReleases: { hold: 0, idle: 0 },
      releasesWithoutWarning: 0,
      doubleHolds: 0,
      peakVms: 0,
      arrivals: 0,
      failures: { injected: 0, recovered: 0 },
    };
    if (policy.warmPool)
      await setWarmPool(db, { fleetId: fleet.id, policy: policy.warmPool, actor: systemActor });
    for (const r of policy.recurring ?? [])
      await addRecurringSchedule(
        db,
        {
          ...recurringScheduleInput.parse({
            fleetId: fleet.id,
            rrule: r.rrule,
            timezone: "UTC",
            startTime: r.startTime,
            endTime: r.endTime,
            size: r.size,
            startDate: trace.startsAt.slice(0, 10),
          }),
          actor: systemActor,
        },
        start,
      );
    // Failures strike during the sessions, when they hurt: a seeded minute inside a random slot.
    const failAt = new Set<number>();
    for (let i = 0; i < (policy.injectedFailures ?? 0) && trace.slots.length > 0; i++) {
      const slot = trace.slots[between(rand, 0, trace.slots.length - 1)] as Trace["slots"][number];
      failAt.add(between(rand, slot.start + 30, slot.end - 30));
    }
    const lastBeat = new Map<string, number>();
    /** participant → the VM (and assignment) they hold, as far as they know. */
    const holds = new Map<string, { vmId: string; assignmentId: string | null }>();
    /** participant → since when they need a VM and have none. */
    const waiting = new Map<string, number>();
    const minutes = options.minutes ?? trace.horizonMinutes;
    const byId = new Map(people.map((p) => [p.id, p]));
    /**
     * Minute steps while anything happens; five-minute steps at night (nobody due within the
     * hour, nobody left within two, no scheduled change in between). The clock, the reminders
     * (10 min ahead) and the idle release keep working at that grain.
     */
    const stepAt = (t: number) => {
      const near = people.some((p) =>
        p.visits.some((v) => v.arrive - 60 <= t + QUIET_STEP && v.leave + 120 >= t),
      );
      const due = policy.schedule.some((s) => s.at > t && s.at <= t + QUIET_STEP);
      return near || due || cloud.busy() ? 1 : Math.min(QUIET_STEP, minutes - t);
    };
    let step = 1;

    for (let t = 0, prevT = -1; t < minutes; prevT = t, t += step) {
      const now = at(t);
      await setClock(sql, now);

      // The machines: boots that finished register, wipes are acknowledged, extra VMs go.
      const liveFleets = (await db.select().from(fleets).where(eq(fleets.id, fleet.id))) as Fleet[];
      await cloud.tick(t, liveFleets);

      // Every running agent reports what its holder is doing, as the agent sees it. Agents of
      // VMs nobody holds report every other minute (well inside the 3-minute silence limit);
      // only held VMs' reports decide anything (idle release).
      const running = await db
        .select()
        .from(vms)
        .where(
          and(inArray(vms.state, ["ready", "claimed", "draining"]), eq(vms.fleetId, fleet.id)),
        );
      const holderByVm = new Map([...holds].map(([pid, h]) => [h.vmId, pid]));
      await inParallel(running, 4, async (vm) => {
        const pid = holderByVm.get(vm.id);
        const p = pid === undefined ? undefined : byId.get(pid);
        if (!p && t - (lastBeat.get(vm.id) ?? -10) < 2) return;
        if (cloud.isBroken(vm.id)) return;
        lastBeat.set(vm.id, t);
        const since = p ? inactiveSince(p, t) : undefined;
        const idle = since !== undefined && t - since >= policy.agentIdleAfterMinutes;
        await cloud.heartbeat(vm, {
          inUse: !!p && since === undefined,
          idleSince: idle ? at(since) : null,
        });
      });

      if (failAt.has(t)) {
        const victim = running[between(rand, 0, running.length - 1)];
        if (victim) {
          cloud.breakAgent(victim.id);
          result.failures.injected++;
        }
      }

      // The worker's periodic jobs, in the order they would come round within a minute.
      await runDueSchedules(db, now);
      if (policy.recurring) await applyRecurringSchedules(db, { now });
      if (policy.warmPool) await reconcileWarmPools(db, { now });
      if (policy.recovery) await runRecovery(db, { now });
      for (const id of await queuedOperationIds(db))
        await executeOperation({ db, drivers: { local: cloud }, log: silent }, id);
      if (reminders) await sendHoldReminders(db, reminders, undefined, now);
      const released = await releaseExpiredHolds(db);
      const byPolicy = new Set<string>();
      for (const r of released) {
        result.policyReleases[r.reason === "idle" ? "idle" : "hold"]++;
        byPolicy.add(r.vmId);
        const holder = [...holds].find(([, h]) => h.vmId === r.vmId);
        const assignmentId = holder?.[1].assignmentId;
        const warned = assignmentId
          ? await db
              .select({ at: holdReminders.sentAt })
              .from(holdReminders)
              .where(
                and(
                  eq(holdReminders.assignmentId, assignmentId),
                  eq(holdReminders.kind, r.reason === "idle" ? "idle" : "hold"),
                ),
              )
          : [];
        if (warned.length === 0) result.releasesWithoutWarning++;
        if (holder) holds.delete(holder[0]);
      }

      // Held VMs the participants lost some other way than a warned release: work lost.
      const heldNow = await db
        .select({ id: vms.id, holderId: vms.holderId })
        .from(vms)
        .where(isNotNull(vms.holderId));
      const holderOf = new Map(heldNow.map((v) => [v.id, v.holderId]));
      for (const [pid, h] of holds) {
        if (holderOf.get(h.vmId) !== userIds.get(pid)) {
          if (!byPolicy.has(h.vmId)) result.releasesWithoutWarning++;
          holds.delete(pid);
        }
      }

      for (const p of people) {
        const userId = userIds.get(p.id) as string;
        const ended = p.visits.find((v) => v.leave > prevT && v.leave <= t);
        if (ended) {
          if (waiting.has(p.id)) {
            result.unserved++;
            waiting.delete(p.id);
          }
          if (ended.release && holds.has(p.id)) {
            await releaseVm(db, { userId, actor: { kind: "user", id: userId } });
            holds.delete(p.id);
          }
        }
        const visit = visitAt(p, t);
        if (!visit) continue;
        if (visit.arrive === t) result.arrivals++;
        if (!activeAt(p, t)) continue;
        if (holds.has(p.id)) {
          // Back at a VM they kept (a rejoin): no wait.
          if (visit.arrive === t) result.waits.push(0);
          continue;
        }
        if (!waiting.has(p.id)) waiting.set(p.id, t);
        try {
          const { vm } = await claimVm(db, { userId, actor: { kind: "user", id: userId } });
          holds.set(p.id, { vmId: vm.id, assignmentId: vm.assignmentId });
          result.waits.push((t - (waiting.get(p.id) as number)) * 60);
          waiting.delete(p.id);
          await cloud.acknowledgeAssignment(vm);
        } catch (e) {
          if (!isDomainError(e) || e.code !== "NO_CAPACITY") throw e;
        }
      }

      step = stepAt(t);
      // The step's account: every machine not terminated is paid for; in use only while its
      // holder is at it.
      const paid = await db
        .select({ id: vms.id, holderId: vms.holderId })
        .from(vms)
        .where(ne(vms.state, "terminated"));
      const heldBy = new Map([...holds].map(([pid, h]) => [h.vmId, pid]));
      let inUse = 0;
      const seenHolders = new Set<string>();
      for (const v of paid) {
        if (!v.holderId) continue;
        if (seenHolders.has(v.holderId)) result.doubleHolds++;
        seenHolders.add(v.holderId);
        const pid = heldBy.get(v.id);
        if (pid !== undefined && userIds.get(pid) !== v.holderId) result.doubleHolds++;
        const p = pid === undefined ? undefined : byId.get(pid);
        if (p && activeAt(p, t)) inUse++;
      }
      if (heldBy.size !== holds.size) result.doubleHolds++;
      result.peakVms = Math.max(result.peakVms, paid.length);
      result.paidGpuHours += (paid.length * step) / 60;
      result.inUseGpuHours += (inUse * step) / 60;
      result.idleGpuHours += ((paid.length - inUse) * step) / 60;
    }
    result.unserved += waiting.size;
    result.failures.recovered = cloud.recovered;
    return result;
  } finally {
    await sql.end({ timeout: 5 });
  }
}
