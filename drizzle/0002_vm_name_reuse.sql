DROP INDEX "vms_fleet_name_key";--> statement-breakpoint
CREATE UNIQUE INDEX "vms_fleet_name_live_key" ON "vms" USING btree ("fleet_id","name") WHERE state <> 'terminated';