CREATE TYPE "public"."actor_kind" AS ENUM('user', 'agent', 'system');--> statement-breakpoint
CREATE TYPE "public"."fleet_driver" AS ENUM('local', 'terraform', 'byo');--> statement-breakpoint
CREATE TYPE "public"."fleet_status" AS ENUM('creating', 'active', 'scaling', 'destroying', 'destroyed', 'failed');--> statement-breakpoint
CREATE TYPE "public"."user_role" AS ENUM('researcher', 'admin');--> statement-breakpoint
CREATE TYPE "public"."vm_state" AS ENUM('provisioning', 'booting', 'ready', 'claimed', 'releasing', 'draining', 'rebooting', 'terminating', 'terminated', 'failed');--> statement-breakpoint
CREATE TABLE "agent_credentials" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"vm_id" uuid NOT NULL,
	"token_hash" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"revoked_at" timestamp with time zone,
	"last_used_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "audit_events" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "audit_events_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	"actor_kind" "actor_kind" NOT NULL,
	"actor_id" text,
	"action" text NOT NULL,
	"target_kind" text NOT NULL,
	"target_id" text,
	"from_state" text,
	"to_state" text,
	"details" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"ip" text
);
--> statement-breakpoint
CREATE TABLE "fleets" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"name" text NOT NULL,
	"driver" "fleet_driver" NOT NULL,
	"instance_type" text NOT NULL,
	"gpu_model" text,
	"gpu_count" integer DEFAULT 1 NOT NULL,
	"region" text,
	"image" text,
	"desired_size" integer DEFAULT 0 NOT NULL,
	"status" "fleet_status" DEFAULT 'creating' NOT NULL,
	"config" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "fleets_name_unique" UNIQUE("name")
);
--> statement-breakpoint
CREATE TABLE "accounts" (
	"user_id" uuid NOT NULL,
	"type" text NOT NULL,
	"provider" text NOT NULL,
	"provider_account_id" text NOT NULL,
	"refresh_token" text,
	"access_token" text,
	"expires_at" integer,
	"token_type" text,
	"scope" text,
	"id_token" text,
	"session_state" text,
	CONSTRAINT "accounts_provider_provider_account_id_pk" PRIMARY KEY("provider","provider_account_id")
);
--> statement-breakpoint
CREATE TABLE "sessions" (
	"session_token" text PRIMARY KEY NOT NULL,
	"user_id" uuid NOT NULL,
	"expires" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "users" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"name" text,
	"email" text,
	"email_verified" timestamp with time zone,
	"image" text,
	"role" "user_role" DEFAULT 'researcher' NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "users_email_unique" UNIQUE("email")
);
--> statement-breakpoint
CREATE TABLE "verification_tokens" (
	"identifier" text NOT NULL,
	"token" text NOT NULL,
	"expires" timestamp with time zone NOT NULL,
	CONSTRAINT "verification_tokens_identifier_token_pk" PRIMARY KEY("identifier","token")
);
--> statement-breakpoint
CREATE TABLE "vms" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"fleet_id" uuid NOT NULL,
	"name" text NOT NULL,
	"provider_id" text,
	"state" "vm_state" DEFAULT 'provisioning' NOT NULL,
	"holder_id" uuid,
	"assignment_id" uuid,
	"assignment_acked_id" uuid,
	"drain_requested" boolean DEFAULT false NOT NULL,
	"claimed_at" timestamp with time zone,
	"released_at" timestamp with time zone,
	"state_changed_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_heartbeat_at" timestamp with time zone,
	"boot_id" text,
	"hostname" text,
	"agent_version" text,
	"healthy" boolean DEFAULT false NOT NULL,
	"health_reasons" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"gpus" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"in_use" boolean DEFAULT false NOT NULL,
	"idle_since" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "vms_claimed_has_holder" CHECK (state <> 'claimed' OR holder_id IS NOT NULL),
	CONSTRAINT "vms_holder_only_when_held" CHECK (holder_id IS NULL OR state IN ('claimed', 'draining', 'rebooting', 'booting'))
);
--> statement-breakpoint
ALTER TABLE "agent_credentials" ADD CONSTRAINT "agent_credentials_vm_id_vms_id_fk" FOREIGN KEY ("vm_id") REFERENCES "public"."vms"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "accounts" ADD CONSTRAINT "accounts_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sessions" ADD CONSTRAINT "sessions_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "vms" ADD CONSTRAINT "vms_fleet_id_fleets_id_fk" FOREIGN KEY ("fleet_id") REFERENCES "public"."fleets"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "vms" ADD CONSTRAINT "vms_holder_id_users_id_fk" FOREIGN KEY ("holder_id") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "agent_credentials_vm_idx" ON "agent_credentials" USING btree ("vm_id");--> statement-breakpoint
CREATE INDEX "audit_target_idx" ON "audit_events" USING btree ("target_kind","target_id","at");--> statement-breakpoint
CREATE INDEX "audit_at_idx" ON "audit_events" USING btree ("at");--> statement-breakpoint
CREATE UNIQUE INDEX "vms_fleet_name_key" ON "vms" USING btree ("fleet_id","name");--> statement-breakpoint
CREATE INDEX "vms_claimable_idx" ON "vms" USING btree ("fleet_id","state_changed_at") WHERE state = 'ready' AND healthy;--> statement-breakpoint
CREATE UNIQUE INDEX "vms_one_active_per_holder" ON "vms" USING btree ("holder_id") WHERE holder_id IS NOT NULL;--> statement-breakpoint
CREATE INDEX "vms_state_idx" ON "vms" USING btree ("state");--> statement-breakpoint
CREATE INDEX "vms_heartbeat_idx" ON "vms" USING btree ("last_heartbeat_at") WHERE healthy;