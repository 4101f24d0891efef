import { and, eq, isNotNull, or, type SQL, sql } from "drizzle-orm";
import type { Db } from "../db/client";
import { fleets, holdReminders, type ReminderKind, users, vms } from "../db/schema";
import type { Env } from "../env";
import { createMailer, type Mailer } from "../mail";
import { held, holdEndsAt, idleEndsAt, reportedIdle } from "./hold-limits";

export type ReminderSettings = {
  mailer: Mailer;
  /** The sender (LABLINK_EMAIL_FROM). */
  from: string;
  /** Where researchers open LabLink (LABLINK_PUBLIC_URL); the mail links to My VM there. */
  publicUrl: string;
  /** How long before a limit releases a VM its holder is emailed (LABLINK_HOLD_REMINDER_MINUTES). */
  leadMinutes: number;
};

export type SentReminder = { vmId: string; kind: ReminderKind; releaseAt: Date };

type Due = {
  vmId: string;
  vmName: string;
  fleetName: string;
  assignmentId: string;
  userId: string;
  email: string;
  userName: string | null;
  kind: ReminderKind;
  /** The period the reminder is for: the claim (hold), or the idle count's start (idle). */
  since: Date;
  idleSince: Date | null;
  releaseAt: Date;
  limitMinutes: number;
};

const utc = (d: Date) => `${d.toISOString().slice(11, 16)} UTC`;
const limitText = (m: number) => (m % 60 === 0 ? `${m / 60} h` : `${m} min`);

/** The reminder's text: what happens when, why, and what to do. No secrets, nothing to click but My VM (and its download section). */
export function reminderMail(d: Due, settings: ReminderSettings, now: Date) {
  const minutes = Math.max(1, Math.round((d.releaseAt.getTime() - now.getTime()) / 60_000));
  const why =
    d.kind === "hold"
      ? `the fleet ${d.fleetName} lets a researcher hold a VM for ${limitText(d.limitMinutes)}`
      : `nothing has used it since ${utc(d.idleSince ?? d.since)}, and the fleet ${d.fleetName} releases VMs idle for ${limitText(d.limitMinutes)}`;
  const keep =
    d.kind === "idle" ? "Connecting to it, or running something on it, keeps it yours.\n\n" : "";
  return {
    from: settings.from,
    to: d.email,
    subject: `Your LabLink VM ${d.vmName} will be released at ${utc(d.releaseAt)}`,
    text:
      `Hello ${d.userName ?? d.email},\n\n` +
      `Your VM ${d.vmName} will be released at ${utc(d.releaseAt)}, in about ${minutes} min: ${why}.\n\n` +
      `A released VM is wiped. Save your work and copy off what you need before then.\n\n` +
      keep +
      `My VM: ${new URL("/", settings.publicUrl).toString()}\n\n` +
      // Not the download itself: a link that starts one would let any mail scanner fetch it.
      `Take your work along (download your home folder as a .tar.gz from My VM): ${new URL("/#download-work", settings.publicUrl).toString()}\n`,
  };
}

/**
 * Emails each researcher whose held VM a limit will release within `leadMinutes`: the hold limit
 * (counted from the claim) or the idle limit (while the agent reports the VM idle). At most once
 * per assignment, limit and period: the reminder row is written first (its primary key decides
 * between workers) and deleted again if the mail cannot be sent, so the next run tries again. A
 * VM whose release is already due is left to the release itself. Never throws for one failed mail.
 */
export async function sendHoldReminders(
  db: Db,
  settings: ReminderSettings,
  log?: { warn: (obj: object, msg: string) => void },
  now = new Date(),
): Promise<SentReminder[]> {
  const lead = settings.leadMinutes;
  if (lead <= 0) return [];
  const holdAt = holdEndsAt(sql`${fleets.maxHoldMinutes}`);
  const idleAt = idleEndsAt(sql`${fleets.idleReleaseMinutes}`);
  const at = sql`${now.toISOString()}::timestamptz`;
  const within = (ends: SQL) =>
    sql`(${ends} > ${at} AND ${ends} <= ${at} + make_interval(mins => ${lead}))`;
  const rows = await db
    .select({
      vmId: vms.id,
      vmName: vms.name,
      fleetName: fleets.name,
      assignmentId: vms.assignmentId,
      userId: users.id,
      email: users.email,
      userName: users.name,
      claimedAt: vms.claimedAt,
      // An extended hold is a new period: its new end is reminded of again (hold-extensions.ts).
      holdPeriod:
        sql<Date>`${vms.claimedAt} + make_interval(mins => ${vms.holdExtendedMinutes})`.mapWith(
          vms.claimedAt,
        ),
      holdExtendedMinutes: vms.holdExtendedMinutes,
      idleSince: vms.idleSince,
      // A new spell of idleness, or the holder's "I'm still using it", starts a new period.
      idlePeriod: sql<string | null>`greatest(${vms.idleSince}, ${vms.idleKeptAt})`,
      maxHoldMinutes: fleets.maxHoldMinutes,
      idleReleaseMinutes: fleets.idleReleaseMinutes,
      holdAt: sql<Date | null>`CASE WHEN ${fleets.maxHoldMinutes} IS NOT NULL AND ${within(holdAt)} THEN ${holdAt} END`,
      idleAt: sql<Date | null>`CASE WHEN ${fleets.idleReleaseMinutes} IS NOT NULL AND ${reportedIdle()} AND ${within(idleAt)} THEN ${idleAt} END`,
    })
    .from(vms)
    .innerJoin(fleets, eq(fleets.id, vms.fleetId))
    .innerJoin(users, eq(users.id, vms.holderId))
    .where(
      and(
        held(),
        isNotNull(vms.assignmentId),
        isNotNull(users.email),
        or(
          and(isNotNull(fleets.maxHoldMinutes), within(holdAt)),
          and(isNotNull(fleets.idleReleaseMinutes), reportedIdle(), within(idleAt)),
        ),
      ),
    );

  const due: Due[] = [];
  for (const r of rows) {
    const base = {
      vmId: r.vmId,
      vmName: r.vmName,
      fleetName: r.fleetName,
      assignmentId: r.assignmentId as string,
      userId: r.userId,
      email: r.email as string,
      userName: r.userName,
      idleSince: r.idleSince,
    };
    if (r.holdAt && r.holdPeriod && r.maxHoldMinutes !== null) {
      due.push({
        ...base,
        kind: "hold",
        since: r.holdPeriod,
        releaseAt: new Date(r.holdAt),
        limitMinutes: r.maxHoldMinutes + r.holdExtendedMinutes,
      });
    }
    if (r.idleAt && r.idlePeriod && r.idleReleaseMinutes !== null) {
      due.push({
        ...base,
        kind: "idle",
        since: new Date(r.idlePeriod),
        releaseAt: new Date(r.idleAt),
        limitMinutes: r.idleReleaseMinutes,
      });
    }
  }

  const sent: SentReminder[] = [];
  for (const d of due) {
    const key = { assignmentId: d.assignmentId, kind: d.kind, since: d.since };
    const [claimed] = await db
      .insert(holdReminders)
      .values({ ...key, vmId: d.vmId, userId: d.userId, releaseAt: d.releaseAt })
      .onConflictDoNothing()
      .returning({ vmId: holdReminders.vmId });
    if (!claimed) continue;
    try {
      await settings.mailer.sendMail(reminderMail(d, settings, now));
      sent.push({ vmId: d.vmId, kind: d.kind, releaseAt: d.releaseAt });
    } catch (err) {
      await db
        .delete(holdReminders)
        .where(
          and(
            eq(holdReminders.assignmentId, key.assignmentId),
            eq(holdReminders.kind, key.kind),
            eq(holdReminders.since, key.since),
          ),
        );
      // The VM only: the address and the mail's text stay out of the logs.
      log?.warn(
        { err: (err as Error).message, vmId: d.vmId, kind: d.kind },
        "hold reminder not sent; will retry",
      );
    }
  }
  return sent;
}

/**
 * The worker's reminder settings: only with SMTP set up (LABLINK_SMTP_URL, LABLINK_EMAIL_FROM) and
 * a lead above 0 (LABLINK_HOLD_REMINDER_MINUTES); the link goes to LABLINK_PUBLIC_URL.
 */
export function reminderSettings(e: Env): ReminderSettings | undefined {
  const mailer = createMailer(e.LABLINK_SMTP_URL);
  if (!mailer || !e.LABLINK_EMAIL_FROM || e.LABLINK_HOLD_REMINDER_MINUTES === 0) return undefined;
  return {
    mailer,
    from: e.LABLINK_EMAIL_FROM,
    // Required with SMTP (server/env.ts); the fallback keeps the type honest.
    publicUrl: e.LABLINK_PUBLIC_URL ?? `http://localhost:${e.PORT}`,
    leadMinutes: e.LABLINK_HOLD_REMINDER_MINUTES,
  };
}

/** The mail settings automatic recovery tells holders with (server/domain/recovery.ts). */
export function recoveryMailSettings(
  e: Env,
): { mailer: Mailer; from: string; publicUrl: string } | undefined {
  const mailer = createMailer(e.LABLINK_SMTP_URL);
  if (!mailer || !e.LABLINK_EMAIL_FROM) return undefined;
  return {
    mailer,
    from: e.LABLINK_EMAIL_FROM,
    publicUrl: e.LABLINK_PUBLIC_URL ?? `http://localhost:${e.PORT}`,
  };
}
