import { sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";

/** The health reason the sweep below writes; automatic recovery tells it from a real fault. */
export const SILENT_REASON_PREFIX = "agent silent since ";

/**
 * Marks VMs whose agent has been silent longer than `staleSeconds` as unhealthy, which takes
 * them out of the claimable pool; the next heartbeat restores them. One statement, with its
 * audit rows, however many VMs went silent.
 */
export async function markSilentAgents(db: DbOrTx, staleSeconds: number): Promise<string[]> {
  const rows = await db.execute<{ id: string }>(sql`
    WITH silent AS (
      UPDATE vms SET healthy = false,
        health_reasons = jsonb_build_array(${SILENT_REASON_PREFIX} || to_char(last_heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC')
      WHERE healthy
        AND state NOT IN ('terminated', 'terminating', 'failed')
        AND last_heartbeat_at < now() - make_interval(secs => ${staleSeconds})
      RETURNING id
    ), audit AS (
      INSERT INTO audit_events (actor_kind, action, target_kind, target_id, details)
      SELECT 'system', 'vm.agent_silent', 'vm', id::text, jsonb_build_object('staleSeconds', ${staleSeconds}::int)
      FROM silent
    )
    SELECT id FROM silent`);
  return rows.map((r) => r.id);
}
