CREATE TYPE "public"."booking_status" AS ENUM('booked', 'active', 'no_show', 'cancelled', 'done');--> statement-breakpoint
CREATE TABLE "bookings" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"fleet_id" uuid NOT NULL,
	"user_id" uuid NOT NULL,
	"seat" integer NOT NULL,
	"starts_at" timestamp with time zone NOT NULL,
	"ends_at" timestamp with time zone NOT NULL,
	"status" "booking_status" DEFAULT 'booked' NOT NULL,
	"vm_id" uuid,
	"held_at" timestamp with time zone,
	"label" text,
	"created_by" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"ended_at" timestamp with time zone,
	CONSTRAINT "bookings_range_valid" CHECK ("bookings"."ends_at" > "bookings"."starts_at"),
	CONSTRAINT "bookings_seat_positive" CHECK ("bookings"."seat" >= 1)
);
--> statement-breakpoint
ALTER TABLE "fleets" ADD COLUMN "booking_policy" jsonb;--> statement-breakpoint
ALTER TABLE "vms" ADD COLUMN "reserved_booking_id" uuid;--> statement-breakpoint
ALTER TABLE "bookings" ADD CONSTRAINT "bookings_fleet_id_fleets_id_fk" FOREIGN KEY ("fleet_id") REFERENCES "public"."fleets"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "bookings" ADD CONSTRAINT "bookings_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "bookings" ADD CONSTRAINT "bookings_vm_id_vms_id_fk" FOREIGN KEY ("vm_id") REFERENCES "public"."vms"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "bookings" ADD CONSTRAINT "bookings_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "bookings_live_idx" ON "bookings" USING btree ("fleet_id","starts_at") WHERE status IN ('booked', 'active');--> statement-breakpoint
CREATE INDEX "bookings_user_idx" ON "bookings" USING btree ("user_id","starts_at");--> statement-breakpoint
-- Overlapping bookings are refused by the database, not by a check in code (hand-written: drizzle
-- cannot declare exclusion constraints). btree_gist lets a GiST index compare the uuid and
-- integer columns with = beside the range's &&.
CREATE EXTENSION IF NOT EXISTS btree_gist;--> statement-breakpoint
-- One live booking per seat and time: booking tries seats in order and takes the first free one.
ALTER TABLE "bookings" ADD CONSTRAINT "bookings_seat_no_overlap" EXCLUDE USING gist (
	"fleet_id" WITH =, "seat" WITH =, tstzrange("starts_at", "ends_at") WITH &&
) WHERE ("status" IN ('booked', 'active'));--> statement-breakpoint
-- A researcher holds one VM at a time (vms_one_active_per_holder), so never two live bookings at once.
ALTER TABLE "bookings" ADD CONSTRAINT "bookings_user_no_overlap" EXCLUDE USING gist (
	"user_id" WITH =, tstzrange("starts_at", "ends_at") WITH &&
) WHERE ("status" IN ('booked', 'active'));--> statement-breakpoint
-- A VM set aside for a booking (looked up by the activation job).
CREATE INDEX "vms_reserved_booking_idx" ON "vms" ("reserved_booking_id") WHERE "reserved_booking_id" IS NOT NULL;
