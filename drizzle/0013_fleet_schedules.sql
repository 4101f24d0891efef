CREATE TYPE "public"."schedule_status" AS ENUM('pending', 'done', 'cancelled', 'superseded', 'failed');--> statement-breakpoint
CREATE TABLE "fleet_schedules" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"fleet_id" uuid NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"size" integer NOT NULL,
	"status" "schedule_status" DEFAULT 'pending' NOT NULL,
	"operation_id" uuid,
	"note" text,
	"created_by" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "fleet_schedules" ADD CONSTRAINT "fleet_schedules_fleet_id_fleets_id_fk" FOREIGN KEY ("fleet_id") REFERENCES "public"."fleets"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "fleet_schedules" ADD CONSTRAINT "fleet_schedules_operation_id_operations_id_fk" FOREIGN KEY ("operation_id") REFERENCES "public"."operations"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "fleet_schedules" ADD CONSTRAINT "fleet_schedules_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "fleet_schedules_due_idx" ON "fleet_schedules" USING btree ("at") WHERE status = 'pending';--> statement-breakpoint
CREATE INDEX "fleet_schedules_fleet_idx" ON "fleet_schedules" USING btree ("fleet_id","at");