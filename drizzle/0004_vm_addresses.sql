ALTER TABLE "vms" ADD COLUMN "private_ip" text;--> statement-breakpoint
ALTER TABLE "vms" ADD COLUMN "public_ip" text;