import { readFileSync } from "node:fs";
import { z } from "zod";

/**
 * A workshop trace: who is expected, who comes, when they sit down, when they step away and when
 * they leave. All times are whole minutes after `startsAt` (day 1, 00:00 UTC); the sim ticks once
 * a virtual minute.
 */
const minute = z.number().int().min(0);

export const visitSchema = z.strictObject({
  /** Sits down and asks for a VM. */
  arrive: minute,
  /** Stops working for good this visit. */
  leave: minute,
  /** Presses Release on leaving; otherwise walks away and leaves the VM held (and idle). */
  release: z.boolean(),
  /** Stretches [from, to) inside the visit with nothing running: a coffee break, a talk. */
  idle: z.array(z.tuple([minute, minute])),
});
export type Visit = z.infer<typeof visitSchema>;

export const participantSchema = z.strictObject({
  id: z.string().min(1),
  /** Booked, never came: part of the expected head count, no visits. */
  noShow: z.boolean(),
  visits: z.array(visitSchema),
});
export type Participant = z.infer<typeof participantSchema>;

export const slotSchema = z.strictObject({ label: z.string(), start: minute, end: minute });
export type Slot = z.infer<typeof slotSchema>;

export const traceSchema = z
  .strictObject({
    name: z.string(),
    /** How the trace was made and what it looks like (kept in the file so it travels with it). */
    description: z.array(z.string()),
    seed: z.number().int(),
    startsAt: z.iso.datetime(),
    horizonMinutes: z.number().int().min(1),
    /** The session slots the organisers published (what a recurring schedule is set up from). */
    slots: z.array(slotSchema),
    participants: z.array(participantSchema),
  })
  .superRefine((t, ctx) => {
    for (const p of t.participants) {
      let last = -1;
      for (const v of p.visits) {
        if (v.arrive < last || v.leave <= v.arrive || v.leave > t.horizonMinutes)
          ctx.addIssue({ code: "custom", message: `${p.id}: visits overlap or leave the horizon` });
        for (const [a, b] of v.idle)
          if (a < v.arrive || b > v.leave || b <= a)
            ctx.addIssue({ code: "custom", message: `${p.id}: idle stretch outside its visit` });
        last = v.leave;
      }
    }
  });
export type Trace = z.infer<typeof traceSchema>;

export function loadTrace(file: string): Trace {
  return traceSchema.parse(JSON.parse(readFileSync(file, "utf8")));
}

/** mulberry32: small, fast and the same sequence on every machine for a given seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A whole number in [lo, hi], both included. */
export const between = (rand: () => number, lo: number, hi: number) =>
  lo + Math.floor(rand() * (hi - lo + 1));

export type WorkshopShape = {
  participants: number;
  days: number;
  /** Booked people who never come. */
  noShowRate: number;
  /** Per day, [start, end] of each session in minutes after midnight UTC. */
  sessions: { label: string; start: number; end: number }[];
  /** Chance that someone who came on the day attends a given session. */
  attendRate: number;
  /** Share of arrivals that come well after the start (5–60 min late) instead of in the burst. */
  lateRate: number;
  /** Share who leave early (from 90 min after the start). */
  earlyLeaveRate: number;
  /** Share who press Release on leaving; the rest walk away from a held VM. */
  releaseRate: number;
  /** Chance of one extra idle stretch (10–45 min: reading, a long discussion) per visit. */
  extraIdleRate: number;
};

export const TWO_DAY_WORKSHOP: WorkshopShape = {
  participants: 30,
  days: 2,
  noShowRate: 0.1,
  sessions: [
    { label: "morning", start: 9 * 60, end: 12 * 60 + 30 },
    { label: "afternoon", start: 13 * 60 + 30, end: 17 * 60 },
  ],
  attendRate: 0.93,
  lateRate: 0.2,
  earlyLeaveRate: 0.15,
  releaseRate: 0.4,
  extraIdleRate: 0.25,
};

/**
 * A seeded workshop: arrival bursts at each session start (most within 15 min before to 5 min
 * after), some late arrivals, a coffee break halfway through each session where most people go
 * idle for 15–25 min, lunch between the sessions, nobody in the evening or at night, and day 2
 * like day 1 (a few stay away). No-shows are booked but never come.
 */
export function generateWorkshop(
  seed: number,
  shape: WorkshopShape = TWO_DAY_WORKSHOP,
  startsAt = "2027-03-01T00:00:00.000Z",
): Trace {
  const rand = prng(seed);
  const day = 24 * 60;
  const slots: Slot[] = [];
  for (let d = 0; d < shape.days; d++)
    for (const s of shape.sessions)
      slots.push({
        label: `day ${d + 1} ${s.label}`,
        start: d * day + s.start,
        end: d * day + s.end,
      });

  const participants: Participant[] = [];
  for (let i = 0; i < shape.participants; i++) {
    const id = `p${String(i + 1).padStart(2, "0")}`;
    const noShow = rand() < shape.noShowRate;
    const visits: Visit[] = [];
    if (!noShow) {
      for (const slot of slots) {
        if (rand() >= shape.attendRate) continue;
        const late = rand() < shape.lateRate;
        const arrive = late
          ? slot.start + between(rand, 5, 60)
          : slot.start + between(rand, -15, 5);
        const early = rand() < shape.earlyLeaveRate;
        const leave = early
          ? between(rand, Math.max(arrive + 30, slot.start + 90), slot.end)
          : slot.end + between(rand, -10, 15);
        const idle: [number, number][] = [];
        const mid = Math.round((slot.start + slot.end) / 2);
        const coffee: [number, number] = [
          mid - 10 + between(rand, -3, 3),
          mid + between(rand, 5, 15),
        ];
        if (rand() < 0.8 && coffee[0] > arrive && coffee[1] < leave) idle.push(coffee);
        if (rand() < shape.extraIdleRate) {
          const len = between(rand, 10, 45);
          const from = between(rand, arrive + 5, Math.max(arrive + 5, leave - len - 5));
          const stretch: [number, number] = [from, from + len];
          const clash = idle.some(([a, b]) => stretch[0] < b + 5 && a < stretch[1] + 5);
          if (!clash && stretch[1] < leave) idle.push(stretch);
        }
        idle.sort((a, b) => a[0] - b[0]);
        const prev = visits.at(-1);
        if (prev && arrive < prev.leave) continue;
        visits.push({ arrive, leave, release: rand() < shape.releaseRate, idle });
      }
    }
    participants.push({ id, noShow, visits });
  }
  return traceSchema.parse({
    name: "two-day-workshop",
    description: [
      `Generated by bench/sim/trace.ts generateWorkshop(seed ${seed}).`,
      `${shape.participants} booked participants, ${shape.days} days, no-show rate ${shape.noShowRate}.`,
      "Each day: morning 09:00-12:30 and afternoon 13:30-17:00 UTC with a lunch gap; evening and night empty.",
      `Arrivals burst from 15 min before to 5 min after each start; ${shape.lateRate * 100} % come 5-60 min late.`,
      `${shape.earlyLeaveRate * 100} % leave early; ${shape.releaseRate * 100} % press Release on leaving, the rest walk away from a held VM.`,
      "Most people go idle for a coffee break halfway through each session (15-25 min); some have one more idle stretch of 10-45 min.",
      "Times are minutes after startsAt.",
    ],
    seed,
    startsAt,
    horizonMinutes: shape.days * day,
    slots,
    participants,
  });
}

/** Is the participant working at minute t (inside a visit and not in one of its idle stretches)? */
export function activeAt(p: Participant, t: number): boolean {
  const v = visitAt(p, t);
  return !!v && !v.idle.some(([a, b]) => t >= a && t < b);
}

export function visitAt(p: Participant, t: number): Visit | undefined {
  return p.visits.find((v) => t >= v.arrive && t < v.leave);
}

/**
 * Since when the participant has not been working at minute t: the start of the idle stretch
 * they are in, or the end of their last visit; undefined while they work or before they came.
 */
export function inactiveSince(p: Participant, t: number): number | undefined {
  const v = visitAt(p, t);
  if (v) return v.idle.find(([a, b]) => t >= a && t < b)?.[0];
  return p.visits.filter((x) => x.leave <= t).at(-1)?.leave;
}
