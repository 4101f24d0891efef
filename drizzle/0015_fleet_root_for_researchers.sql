ALTER TYPE "public"."operation_kind" ADD VALUE 'vm.replace';--> statement-breakpoint
ALTER TABLE "fleets" ADD COLUMN "root_for_researchers" boolean DEFAULT false NOT NULL;