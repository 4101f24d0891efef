import { sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";

/** Holds that started this long before the period still count for the part inside it. */
const LOOKBACK_DAYS = 90;

export type UsageRow = {
  holds: number;
  /** Hours held inside the period. */
  hours: number;
  /** Hours × the fleet's GPUs per VM. */
  gpuHours: number;
};
export type UserUsage = UsageRow & {
  userId: string;
  name: string | null;
  email: string | null;
  holdingNow: boolean;
};
export type FleetUsage = UsageRow & { fleetId: string | null; fleet: string | null };
export type UsageReport = {
  from: Date;
  to: Date;
  users: UserUsage[];
  fleets: FleetUsage[];
  total: UsageRow;
};

const round = (n: number) => Math.round(n * 100) / 100;

/**
 * Who used how much, from the audit log: each hold runs from its `vm.claim` event to the VM's
 * next transition into a state without a holder (a release, the hold or idle limit, an admin's
 * force release, a failure), or to now while it lasts. Only the part inside [from, to) counts;
 * holds that started up to 90 days before `from` are included. GPU-hours weigh each hour by the
 * fleet's GPUs per VM. Per researcher and per fleet, most GPU-hours first.
 */
export async function usageReport(db: DbOrTx, from: Date, to: Date): Promise<UsageReport> {
  const f = sql`${from.toISOString()}::timestamptz`;
  const t = sql`${to.toISOString()}::timestamptz`;
  // Holds come from the hold_intervals view (migration 0014), which the quota check reads too.
  const holds = sql`
    WITH inside AS (
      SELECT h.user_id, h.ended_at IS NULL AS open,
        extract(epoch FROM least(coalesce(h.ended_at, now()), ${t}) - greatest(h.claimed_at, ${f}))
          / 3600 AS hours,
        h.fleet_id, fl.name AS fleet, coalesce(fl.gpu_count, 0) AS gpus
      FROM hold_intervals h
      LEFT JOIN fleets fl ON fl.id = h.fleet_id
      WHERE h.claimed_at >= ${f} - make_interval(days => ${LOOKBACK_DAYS})
        AND h.claimed_at < ${t}
        AND least(coalesce(h.ended_at, now()), ${t}) > greatest(h.claimed_at, ${f})
    )`;
  const [users, fleets] = await Promise.all([
    db.execute<Record<string, unknown>>(sql`${holds}
      SELECT i.user_id, u.name, u.email, count(*) AS holds, sum(i.hours) AS hours,
        sum(i.hours * i.gpus) AS gpu_hours, bool_or(i.open) AS holding_now
      FROM inside i LEFT JOIN users u ON u.id::text = i.user_id
      GROUP BY i.user_id, u.name, u.email
      ORDER BY gpu_hours DESC, hours DESC, u.name`),
    db.execute<Record<string, unknown>>(sql`${holds}
      SELECT i.fleet_id, i.fleet, count(*) AS holds, sum(i.hours) AS hours,
        sum(i.hours * i.gpus) AS gpu_hours
      FROM inside i GROUP BY i.fleet_id, i.fleet
      ORDER BY gpu_hours DESC, hours DESC, i.fleet`),
  ]);
  const usage = (r: Record<string, unknown>): UsageRow => ({
    holds: Number(r.holds),
    hours: round(Number(r.hours)),
    gpuHours: round(Number(r.gpu_hours)),
  });
  const fleetRows = fleets.map((r) => ({
    fleetId: (r.fleet_id as string | null) ?? null,
    fleet: (r.fleet as string | null) ?? null,
    ...usage(r),
  }));
  return {
    from,
    to,
    users: users.map((r) => ({
      userId: String(r.user_id),
      name: (r.name as string | null) ?? null,
      email: (r.email as string | null) ?? null,
      holdingNow: Boolean(r.holding_now),
      ...usage(r),
    })),
    fleets: fleetRows,
    total: {
      holds: fleetRows.reduce((n, f) => n + f.holds, 0),
      hours: round(fleetRows.reduce((n, f) => n + f.hours, 0)),
      gpuHours: round(fleetRows.reduce((n, f) => n + f.gpuHours, 0)),
    },
  };
}
