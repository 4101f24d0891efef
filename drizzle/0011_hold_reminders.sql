CREATE TYPE "public"."reminder_kind" AS ENUM('hold', 'idle');--> statement-breakpoint
CREATE TABLE "hold_reminders" (
	"assignment_id" uuid NOT NULL,
	"kind" "reminder_kind" NOT NULL,
	"since" timestamp with time zone NOT NULL,
	"vm_id" uuid NOT NULL,
	"user_id" uuid NOT NULL,
	"release_at" timestamp with time zone NOT NULL,
	"sent_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "hold_reminders_assignment_id_kind_since_pk" PRIMARY KEY("assignment_id","kind","since")
);
--> statement-breakpoint
ALTER TABLE "hold_reminders" ADD CONSTRAINT "hold_reminders_vm_id_vms_id_fk" FOREIGN KEY ("vm_id") REFERENCES "public"."vms"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "hold_reminders" ADD CONSTRAINT "hold_reminders_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;