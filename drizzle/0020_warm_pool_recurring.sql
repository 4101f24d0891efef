CREATE TYPE "public"."schedule_kind" AS ENUM('scale', 'destroy');--> statement-breakpoint
CREATE TABLE "fleet_recurring_schedules" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"fleet_id" uuid NOT NULL,
	"rrule" text NOT NULL,
	"timezone" text NOT NULL,
	"start_time" text NOT NULL,
	"end_time" text NOT NULL,
	"size" integer NOT NULL,
	"fallback_size" integer DEFAULT 0 NOT NULL,
	"start_date" text NOT NULL,
	"last_boundary_at" timestamp with time zone,
	"last_applied_size" integer,
	"note" text,
	"created_by" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "fleets" ADD COLUMN "warm_pool" jsonb;--> statement-breakpoint
ALTER TABLE "fleets" ADD COLUMN "warm_pool_state" jsonb;--> statement-breakpoint
ALTER TABLE "fleet_schedules" ADD COLUMN "kind" "schedule_kind" DEFAULT 'scale' NOT NULL;--> statement-breakpoint
ALTER TABLE "fleet_recurring_schedules" ADD CONSTRAINT "fleet_recurring_schedules_fleet_id_fleets_id_fk" FOREIGN KEY ("fleet_id") REFERENCES "public"."fleets"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "fleet_recurring_schedules" ADD CONSTRAINT "fleet_recurring_schedules_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "fleet_recurring_schedules_fleet_idx" ON "fleet_recurring_schedules" USING btree ("fleet_id");