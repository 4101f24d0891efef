ALTER TABLE "fleets" ADD COLUMN "gpu_hours_per_week" integer;--> statement-breakpoint
-- GPU-hours a researcher held on a fleet's VMs since `since` (hours held × the fleet's GPUs per
-- VM), from the audit log: each hold runs from its vm.claim event to the VM's next transition into
-- a state without a holder, or to now. The claim statement checks fleet quotas with it.
CREATE FUNCTION lablink_gpu_hours(p_user text, p_fleet uuid, p_since timestamptz)
RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(sum(extract(epoch FROM coalesce(h.ended_at, now()) - greatest(h.claimed_at, p_since))), 0)
    / 3600 * coalesce((SELECT gpu_count FROM fleets WHERE id = p_fleet), 0)
  FROM (
    SELECT c.at AS claimed_at,
      (SELECT e.at FROM audit_events e
        WHERE e.target_kind = 'vm' AND e.target_id = c.target_id AND e.at > c.at
          AND e.to_state IS NOT NULL
          AND e.to_state NOT IN ('claimed', 'draining', 'rebooting', 'booting')
        ORDER BY e.at LIMIT 1) AS ended_at
    FROM audit_events c
    JOIN vms v ON v.id::text = c.target_id
    WHERE c.actor_id = p_user AND c.action = 'vm.claim' AND v.fleet_id = p_fleet
      AND c.at >= p_since - interval '90 days'
  ) h
  WHERE coalesce(h.ended_at, now()) > greatest(h.claimed_at, p_since)
$$;
