CREATE TYPE "public"."recovery_step" AS ENUM('warm_reboot', 'cold_reboot', 'replace');--> statement-breakpoint
CREATE TABLE "vm_recoveries" (
	"vm_id" uuid PRIMARY KEY NOT NULL,
	"detected_at" timestamp with time zone NOT NULL,
	"problem" text NOT NULL,
	"step" "recovery_step",
	"step_attempts" integer DEFAULT 0 NOT NULL,
	"total_attempts" integer DEFAULT 0 NOT NULL,
	"last_attempt_at" timestamp with time zone,
	"operation_id" uuid,
	"notice_at" timestamp with time zone,
	"notice_holder_id" uuid,
	"notice_next" text
);
--> statement-breakpoint
ALTER TABLE "fleets" ADD COLUMN "recovery_policy" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "vm_recoveries" ADD CONSTRAINT "vm_recoveries_vm_id_vms_id_fk" FOREIGN KEY ("vm_id") REFERENCES "public"."vms"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "vm_recoveries" ADD CONSTRAINT "vm_recoveries_operation_id_operations_id_fk" FOREIGN KEY ("operation_id") REFERENCES "public"."operations"("id") ON DELETE set null ON UPDATE no action;