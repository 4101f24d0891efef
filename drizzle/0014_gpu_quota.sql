ALTER TABLE "fleets" ADD COLUMN "gpu_hours_per_week" integer;--> statement-breakpoint
-- Every hold, from the audit log: from its vm.claim event to the VM's next transition into a
-- state without a holder (vms_holder_only_when_held), or NULL while it lasts. The quota check
-- below and the usage report (server/domain/usage.ts) both read holds from here; filters on
-- user_id and claimed_at reach the audit_events indexes through the view.
CREATE VIEW hold_intervals AS
  SELECT c.actor_id AS user_id, c.target_id AS vm_id, v.fleet_id, c.at AS claimed_at,
    (SELECT e.at FROM audit_events e
      WHERE e.target_kind = 'vm' AND e.target_id = c.target_id AND e.at > c.at
        AND e.to_state IS NOT NULL
        AND e.to_state NOT IN ('claimed', 'draining', 'rebooting', 'booting')
      ORDER BY e.at LIMIT 1) AS ended_at
  FROM audit_events c
  LEFT JOIN vms v ON v.id::text = c.target_id
  WHERE c.action = 'vm.claim';
--> statement-breakpoint
-- GPU-hours a researcher held on a fleet's VMs since `since` (hours held × the fleet's GPUs per
-- VM), holds that began up to 90 days earlier included. The claim statement checks quotas with it.
CREATE FUNCTION lablink_gpu_hours(p_user text, p_fleet uuid, p_since timestamptz)
RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(sum(extract(epoch FROM coalesce(h.ended_at, now()) - greatest(h.claimed_at, p_since))), 0)
    / 3600 * coalesce((SELECT gpu_count FROM fleets WHERE id = p_fleet), 0)
  FROM hold_intervals h
  WHERE h.user_id = p_user AND h.fleet_id = p_fleet
    AND h.claimed_at >= p_since - interval '90 days'
    AND coalesce(h.ended_at, now()) > greatest(h.claimed_at, p_since)
$$;
