-- Heartbeats rewrite vms.last_heartbeat_at and vms.gpus every second (the buffered flush). With an
-- index on last_heartbeat_at every such UPDATE was a non-HOT update that added an entry to every
-- index of vms; without it they are heap-only (HOT) updates that touch no index. The stale-agent
-- sweep (every 10 s) scans the table instead, which costs milliseconds at 100,000 VMs.
DROP INDEX "vms_heartbeat_idx";--> statement-breakpoint
-- Leave room on each page for the new row versions, so that HOT updates stay on their page.
ALTER TABLE "vms" SET (fillfactor = 80);
