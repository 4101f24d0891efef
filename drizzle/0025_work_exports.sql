CREATE TYPE "public"."work_archive_status" AS ENUM('uploaded', 'failed');--> statement-breakpoint
CREATE TYPE "public"."work_export_status" AS ENUM('pending', 'streaming', 'done', 'failed', 'cancelled');--> statement-breakpoint
CREATE TABLE "work_archives" (
	"assignment_id" uuid PRIMARY KEY NOT NULL,
	"user_id" uuid NOT NULL,
	"vm_id" uuid,
	"vm_name" text NOT NULL,
	"bucket" text NOT NULL,
	"region" text NOT NULL,
	"key" text NOT NULL,
	"status" "work_archive_status" NOT NULL,
	"bytes" bigint,
	"error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "work_exports" (
	"id" uuid PRIMARY KEY NOT NULL,
	"vm_id" uuid NOT NULL,
	"assignment_id" uuid NOT NULL,
	"user_id" uuid NOT NULL,
	"status" "work_export_status" DEFAULT 'pending' NOT NULL,
	"folder_bytes" bigint,
	"bytes" bigint DEFAULT 0 NOT NULL,
	"error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "fleets" ADD COLUMN "work_download_max_mib" integer DEFAULT 10240 NOT NULL;--> statement-breakpoint
ALTER TABLE "fleets" ADD COLUMN "work_archive" jsonb;--> statement-breakpoint
ALTER TABLE "work_archives" ADD CONSTRAINT "work_archives_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "work_archives" ADD CONSTRAINT "work_archives_vm_id_vms_id_fk" FOREIGN KEY ("vm_id") REFERENCES "public"."vms"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "work_exports" ADD CONSTRAINT "work_exports_vm_id_vms_id_fk" FOREIGN KEY ("vm_id") REFERENCES "public"."vms"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "work_exports" ADD CONSTRAINT "work_exports_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "work_archives_user_idx" ON "work_archives" USING btree ("user_id","expires_at");--> statement-breakpoint
CREATE INDEX "work_exports_vm_idx" ON "work_exports" USING btree ("vm_id","status");