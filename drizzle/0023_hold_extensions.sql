CREATE TABLE "claim_refusals" (
	"user_id" uuid PRIMARY KEY NOT NULL,
	"fleet_id" uuid,
	"instance_type" text,
	"at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "fleets" ADD COLUMN "hold_extend_minutes" integer;--> statement-breakpoint
ALTER TABLE "fleets" ADD COLUMN "max_hold_extensions" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "fleets" ADD COLUMN "max_total_hold_minutes" integer;--> statement-breakpoint
ALTER TABLE "vms" ADD COLUMN "hold_extensions" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "vms" ADD COLUMN "hold_extended_minutes" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "claim_refusals" ADD CONSTRAINT "claim_refusals_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "claim_refusals" ADD CONSTRAINT "claim_refusals_fleet_id_fleets_id_fk" FOREIGN KEY ("fleet_id") REFERENCES "public"."fleets"("id") ON DELETE cascade ON UPDATE no action;