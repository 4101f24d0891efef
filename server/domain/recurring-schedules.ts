import { asc, eq, inArray } from "drizzle-orm";
import type { Options } from "rrule";
import * as rruleModule from "rrule";
import { z } from "zod";
import type { Db, DbOrTx } from "../db/client";
import { type FleetRecurringSchedule, fleetRecurringSchedules, fleets } from "../db/schema";
import { audit } from "./audit";
import { DomainError, isDomainError } from "./errors";
import { liveFleet } from "./live-fleet";
import { scaleFleet } from "./provisioning";
import { type Actor, systemActor } from "./vm-state";
import { setDesiredReady, warmPoolPolicyOf } from "./warm-pool";

/**
 * Recurring slots ("every Tue/Thu 09:00–17:00 Europe/London, 8 ready"). The RRULE carries only the
 * repetition (FREQ, BYDAY, INTERVAL, UNTIL, COUNT...); the day it starts and the wall-clock times
 * come separately, and occurrences are computed in wall-clock time, then placed in the time zone.
 * That is what keeps a 09:00 slot at 09:00 local on both sides of a DST change (rrule's own TZID
 * handling depends on the server's time zone).
 */

type RRuleLib = typeof rruleModule;
// Node's own ESM loader (the worker under tsx) sees rrule's CommonJS build, whose named exports it
// cannot detect: everything is under `default` there. Bundlers (Next, vitest) see its ESM build.
const lib: RRuleLib = (() => {
  const ns = rruleModule as RRuleLib & { default?: RRuleLib };
  return typeof ns.RRule === "function" ? ns : (ns.default as RRuleLib);
})();
const { Frequency, RRule } = lib;

/** Repetitions an admin may use: a slot is at least a day apart from the next one. */
const ALLOWED_FREQ = [Frequency.YEARLY, Frequency.MONTHLY, Frequency.WEEKLY, Frequency.DAILY];

function parseRule(text: string): { options: Partial<Options> } | { error: string } {
  const rule = text.trim().replace(/^RRULE:/i, "");
  if (/(^|;)\s*(DTSTART|TZID)\s*=/i.test(rule) || /\n/.test(rule)) {
    return { error: "must not contain DTSTART or TZID: give startDate and timezone instead" };
  }
  if (/(^|;)\s*(BYHOUR|BYMINUTE|BYSECOND)\s*=/i.test(rule)) {
    return { error: "must not contain BYHOUR/BYMINUTE/BYSECOND: give startTime and endTime" };
  }
  let options: Partial<Options>;
  try {
    options = RRule.parseString(rule);
  } catch (e) {
    return { error: `is not a valid RRULE (${(e as Error).message})` };
  }
  if (options.freq === undefined || options.freq === null) {
    return { error: "needs FREQ=DAILY, WEEKLY, MONTHLY or YEARLY" };
  }
  if (!ALLOWED_FREQ.includes(options.freq)) {
    return {
      error: "repeats too often: use FREQ=DAILY, WEEKLY, MONTHLY or YEARLY (a slot a day at most)",
    };
  }
  const days = options.byweekday;
  if (Array.isArray(days) && days.some((d) => d === undefined || d === null)) {
    return { error: "has an unknown day in BYDAY (use MO, TU, WE, TH, FR, SA, SU)" };
  }
  return { options };
}

function isTimeZone(tz: string) {
  try {
    new Intl.DateTimeFormat("en-GB", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, "must be a time such as 09:00");

export const recurringScheduleInput = z
  .strictObject({
    fleetId: z.uuid(),
    rrule: z
      .string()
      .trim()
      .min(1, "must be an RRULE such as FREQ=WEEKLY;BYDAY=TU,TH")
      .max(300)
      .superRefine((value, ctx) => {
        const parsed = parseRule(value);
        if ("error" in parsed) ctx.addIssue({ code: "custom", message: parsed.error });
      }),
    timezone: z
      .string()
      .trim()
      .min(1)
      .max(64)
      .refine(isTimeZone, "must be a time zone such as Europe/London"),
    startTime: hhmm,
    endTime: hhmm,
    size: z.number().int().min(0).max(200),
    fallbackSize: z.number().int().min(0).max(200).default(0),
    /** First day the slots may start (YYYY-MM-DD, in the time zone); default: today there. */
    startDate: z
      .string()
      .regex(/^\d{4}-\d{2}-\d{2}$/, "must be a date such as 2027-01-12")
      .optional(),
    note: z.string().trim().max(200).optional(),
  })
  .refine((v) => v.startTime !== v.endTime, {
    message: "must differ from the start time",
    path: ["endTime"],
  });
export type RecurringScheduleInput = z.input<typeof recurringScheduleInput>;

export type RecurringRule = Pick<
  FleetRecurringSchedule,
  "rrule" | "timezone" | "startTime" | "endTime" | "startDate" | "size" | "fallbackSize"
>;

/** The offset of `tz` from UTC at instant `at`, in milliseconds. */
function offsetMs(at: Date, tz: string) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: tz,
    hourCycle: "h23",
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  }).formatToParts(at);
  const n = (type: string) => Number(parts.find((p) => p.type === type)?.value);
  const wall = Date.UTC(n("year"), n("month") - 1, n("day"), n("hour"), n("minute"), n("second"));
  return wall - Math.floor(at.getTime() / 1000) * 1000;
}

/**
 * The instant a wall-clock time (given as a UTC-fields Date) has in `tz`. A time skipped by a
 * spring-forward gap lands just after the gap; a repeated autumn hour takes its first instance.
 */
export function wallToInstant(wall: Date, tz: string): Date {
  const guess = wall.getTime() - offsetMs(wall, tz);
  const again = wall.getTime() - offsetMs(new Date(guess), tz);
  if (again === guess) return new Date(guess);
  // Either side of a change: take the earlier consistent instant, or the later one in a gap.
  const a = new Date(guess);
  const b = new Date(again);
  const ok = (d: Date) => d.getTime() + offsetMs(d, tz) === wall.getTime();
  if (ok(a) && ok(b)) return a < b ? a : b;
  if (ok(a)) return a;
  if (ok(b)) return b;
  return a > b ? a : b;
}

function instantToWall(at: Date, tz: string): Date {
  return new Date(at.getTime() + offsetMs(at, tz));
}

function minutes(hhmmText: string) {
  const [h, m] = hhmmText.split(":").map(Number);
  return (h ?? 0) * 60 + (m ?? 0);
}

function buildRule(r: RecurringRule) {
  const parsed = parseRule(r.rrule);
  if ("error" in parsed) throw new DomainError("INVALID_INPUT", `RRULE ${parsed.error}.`);
  const [y, mo, d] = r.startDate.split("-").map(Number);
  const start = minutes(r.startTime);
  const dtstart = new Date(Date.UTC(y ?? 1970, (mo ?? 1) - 1, d ?? 1, 0, start));
  return new RRule({ ...parsed.options, dtstart, tzid: null });
}

export type Occurrence = { start: Date; end: Date };

function occurrenceOf(r: RecurringRule, wallStart: Date): Occurrence {
  let length = minutes(r.endTime) - minutes(r.startTime);
  if (length <= 0) length += 24 * 60; // 22:00–02:00 ends the next day
  const wallEnd = new Date(wallStart.getTime() + length * 60_000);
  return { start: wallToInstant(wallStart, r.timezone), end: wallToInstant(wallEnd, r.timezone) };
}

/** Occurrences whose start falls in [from, to], as real instants. */
export function occurrencesBetween(r: RecurringRule, from: Date, to: Date): Occurrence[] {
  const rule = buildRule(r);
  const day = 86_400_000;
  // Wall-clock space is at most ±14 h from UTC: widen, then filter on real instants.
  return rule
    .between(
      new Date(instantToWall(from, r.timezone).getTime() - day),
      new Date(instantToWall(to, r.timezone).getTime() + day),
      true,
    )
    .map((w) => occurrenceOf(r, w))
    .filter((o) => o.start >= from && o.start <= to);
}

/** The latest occurrence that started at or before `now`, if any. */
function lastStarted(r: RecurringRule, now: Date): Occurrence | null {
  const rule = buildRule(r);
  let cursor = new Date(instantToWall(now, r.timezone).getTime() + 86_400_000);
  for (let i = 0; i < 4; i++) {
    const w = rule.before(cursor, false);
    if (!w) return null;
    const o = occurrenceOf(r, w);
    if (o.start <= now) return o;
    cursor = w;
  }
  return null;
}

/** The boundary in force at `now`: the size it set and when; null before the first slot. */
export function currentBoundary(r: RecurringRule, now: Date): { at: Date; size: number } | null {
  const o = lastStarted(r, now);
  if (!o) return null;
  return o.end <= now ? { at: o.end, size: r.fallbackSize } : { at: o.start, size: r.size };
}

/** The next size change after `now` (a slot's start or its end), null when the rule has ended. */
export function nextBoundary(r: RecurringRule, now: Date): { at: Date; size: number } | null {
  const o = lastStarted(r, now);
  if (o && o.end > now) return { at: o.end, size: r.fallbackSize };
  const rule = buildRule(r);
  let cursor = new Date(instantToWall(now, r.timezone).getTime() - 86_400_000);
  for (let i = 0; i < 4; i++) {
    const w = rule.after(cursor, false);
    if (!w) return null;
    const next = occurrenceOf(r, w);
    if (next.start > now) return { at: next.start, size: r.size };
    cursor = w;
  }
  return null;
}

function todayIn(tz: string, now: Date) {
  return instantToWall(now, tz).toISOString().slice(0, 10);
}

/** Adds a recurring slot to a fleet (audited as `fleet.schedule_recurring`). */
export async function addRecurringSchedule(
  db: Db,
  req: z.output<typeof recurringScheduleInput> & { actor: Actor },
  now = new Date(),
) {
  return db.transaction(async (tx) => {
    const fleet = await liveFleet(tx, req.fleetId);
    if (fleet.driver === "byo") {
      throw new DomainError(
        "INVALID_INPUT",
        `Fleet ${fleet.name} is bring-your-own: machines join it by enrolling, it cannot be scaled.`,
        { field: "fleetId" },
      );
    }
    const rule: RecurringRule = {
      rrule: req.rrule.replace(/^RRULE:/i, "").toUpperCase(),
      timezone: req.timezone,
      startTime: req.startTime,
      endTime: req.endTime,
      startDate: req.startDate ?? todayIn(req.timezone, now),
      size: req.size,
      fallbackSize: req.fallbackSize,
    };
    if (!nextBoundary(rule, now)) {
      throw new DomainError("INVALID_INPUT", "This rule has no occurrence after now.", {
        field: "rrule",
      });
    }
    // Added between slots: the next start is the first change. Added during one: it applies now.
    const current = currentBoundary(rule, now);
    const inSlot = current !== null && current.size === rule.size && current.at <= now;
    const [row] = await tx
      .insert(fleetRecurringSchedules)
      .values({
        fleetId: fleet.id,
        ...rule,
        note: req.note ?? null,
        lastBoundaryAt: inSlot ? null : now,
        createdBy: req.actor.kind === "user" ? req.actor.id : null,
      })
      .returning();
    if (!row) throw new Error("recurring schedule insert returned nothing");
    await audit(
      tx,
      req.actor,
      "fleet.schedule_recurring",
      { kind: "fleet", id: fleet.id },
      { scheduleId: row.id, ...rule },
    );
    return row;
  });
}

/** A fleet's recurring slots, each with its next size change. */
export async function listRecurringSchedules(db: DbOrTx, fleetId: string, now = new Date()) {
  const rows = await db
    .select()
    .from(fleetRecurringSchedules)
    .where(eq(fleetRecurringSchedules.fleetId, fleetId))
    .orderBy(asc(fleetRecurringSchedules.createdAt));
  return rows.map((r) => ({ ...r, next: nextBoundary(r, now) }));
}

export async function deleteRecurringSchedule(db: Db, scheduleId: string, actor: Actor) {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .delete(fleetRecurringSchedules)
      .where(eq(fleetRecurringSchedules.id, scheduleId))
      .returning();
    if (!row) throw new DomainError("NOT_FOUND", "No such recurring schedule.", { scheduleId });
    await audit(
      tx,
      actor,
      "fleet.schedule_recurring_delete",
      { kind: "fleet", id: row.fleetId },
      { scheduleId, rrule: row.rrule },
    );
    return row;
  });
}

export type RecurringRun = {
  scheduleId: string;
  fleetId: string;
  outcome: "applied" | "waiting" | "failed";
  size: number;
  at: Date;
};

/**
 * Applies each recurring slot's latest boundary (a start: its size; an end: the fallback) once.
 * Warm-pool fleets get it as their ready count, others as their size (a scale operation). A
 * fleet busy with another operation keeps the boundary pending for the next run. Rows are locked
 * with SKIP LOCKED so several workers never apply one twice.
 */
export async function applyRecurringSchedules(
  db: Db,
  { now = new Date() }: { now?: Date } = {},
): Promise<RecurringRun[]> {
  const runs: RecurringRun[] = [];
  await db.transaction(async (tx) => {
    const rows = await tx
      .select({ s: fleetRecurringSchedules, warmPool: fleets.warmPool })
      .from(fleetRecurringSchedules)
      .innerJoin(fleets, eq(fleets.id, fleetRecurringSchedules.fleetId))
      .where(inArray(fleets.status, ["active", "scaling", "failed", "creating"]))
      .for("update", { of: fleetRecurringSchedules, skipLocked: true });
    for (const { s, warmPool } of rows) {
      const b = currentBoundary(s, now);
      if (!b || (s.lastBoundaryAt && b.at <= s.lastBoundaryAt)) continue;
      const run = { scheduleId: s.id, fleetId: s.fleetId, size: b.size, at: b.at };
      try {
        await tx.transaction(async (inner) => {
          if (warmPoolPolicyOf(warmPool)) {
            await setDesiredReady(inner, {
              fleetId: s.fleetId,
              desiredReady: b.size,
              actor: systemActor,
            });
          } else {
            await scaleFleet(inner, s.fleetId, b.size, systemActor);
          }
          await inner
            .update(fleetRecurringSchedules)
            .set({ lastBoundaryAt: b.at, lastAppliedSize: b.size })
            .where(eq(fleetRecurringSchedules.id, s.id));
        });
        runs.push({ ...run, outcome: "applied" });
      } catch (e) {
        if (!isDomainError(e)) throw e;
        if (e.code === "STATE_CONFLICT") {
          runs.push({ ...run, outcome: "waiting" });
          continue;
        }
        // Anything else will not get better by retrying this boundary: the next one may.
        await tx
          .update(fleetRecurringSchedules)
          .set({ lastBoundaryAt: b.at })
          .where(eq(fleetRecurringSchedules.id, s.id));
        runs.push({ ...run, outcome: "failed" });
      }
    }
  });
  return runs;
}
