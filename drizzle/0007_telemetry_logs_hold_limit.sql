CREATE TYPE "public"."vm_log_level" AS ENUM('debug', 'info', 'warn', 'error');--> statement-breakpoint
CREATE TYPE "public"."vm_log_source" AS ENUM('agent', 'cloud-init', 'container');--> statement-breakpoint
CREATE TABLE "gpu_samples" (
	"vm_id" uuid NOT NULL,
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	"gpus" jsonb NOT NULL,
	CONSTRAINT "gpu_samples_vm_id_at_pk" PRIMARY KEY("vm_id","at")
);
--> statement-breakpoint
CREATE TABLE "vm_logs" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "vm_logs_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"vm_id" uuid NOT NULL,
	"boot_id" text,
	"at" timestamp with time zone NOT NULL,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL,
	"source" "vm_log_source" NOT NULL,
	"level" "vm_log_level" DEFAULT 'info' NOT NULL,
	"message" text NOT NULL
);
--> statement-breakpoint
ALTER TABLE "fleets" ADD COLUMN "max_hold_minutes" integer;--> statement-breakpoint
ALTER TABLE "vms" ADD COLUMN "boot_timings" jsonb;--> statement-breakpoint
ALTER TABLE "gpu_samples" ADD CONSTRAINT "gpu_samples_vm_id_vms_id_fk" FOREIGN KEY ("vm_id") REFERENCES "public"."vms"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "vm_logs" ADD CONSTRAINT "vm_logs_vm_id_vms_id_fk" FOREIGN KEY ("vm_id") REFERENCES "public"."vms"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "gpu_samples_at_idx" ON "gpu_samples" USING btree ("at");--> statement-breakpoint
CREATE INDEX "vm_logs_vm_idx" ON "vm_logs" USING btree ("vm_id","id");