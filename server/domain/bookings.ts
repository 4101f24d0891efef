import { and, asc, desc, eq, gt, inArray, isNotNull, isNull, lte, or, sql } from "drizzle-orm";
import { z } from "zod";
import type { Db, DbOrTx } from "../db/client";
import { type Booking, bookings, fleets, type UserRole, users, vms } from "../db/schema";
import type { Mailer } from "../mail";
import { audit } from "./audit";
import { DomainError } from "./errors";
import { assertFleetAccessible, fleetAccessible, type Viewer } from "./groups";
import { liveFleet } from "./live-fleet";
import { type Actor, HOLDER_STATES, systemActor, transition } from "./vm-state";

/**
 * A fleet's booking policy (`fleets.booking_policy`); null: the fleet cannot be booked.
 * The limits bind researchers; an admin's block booking is bound only by the seats.
 */
export const bookingPolicySchema = z.strictObject({
  /** Bookable capacity: at most this many bookings at any moment (≤ the fleet's size). */
  seats: z.number().int().min(1, "At least one seat.").max(500, "At most 500 seats."),
  /** How far ahead a researcher may book. */
  maxDaysAhead: z.number().int().min(1).max(365).default(14),
  /** The longest slot a researcher may book. */
  maxMinutes: z
    .number()
    .int()
    .min(15, "A slot is at least 15 minutes.")
    .max(7 * 24 * 60)
    .default(240),
  /** Upcoming or running bookings one researcher may have at once (on this fleet). */
  maxPerResearcher: z.number().int().min(1).max(100).default(2),
  /** A booker who has not claimed the VM this long after the start is a no-show. */
  graceMinutes: z.number().int().min(1).max(240).default(15),
  /**
   * How long before the start the warm pool prepares a VM and one is set aside for the booking
   * (walk-in claims can no longer take it). A VM takes minutes to boot: longer than that.
   */
  leadMinutes: z.number().int().min(1).max(240).default(15),
});
export type BookingPolicy = z.infer<typeof bookingPolicySchema>;
export type BookingPolicyInput = z.input<typeof bookingPolicySchema>;

export function bookingPolicyOf(raw: unknown): BookingPolicy | null {
  if (raw === undefined || raw === null) return null;
  const parsed = bookingPolicySchema.safeParse(raw);
  return parsed.success ? parsed.data : null;
}

const LIVE = ["booked", "active"] as const;
const MINUTE = 60_000;

/** True when `e` (or its cause) is Postgres's exclusion violation (23P01) of `constraint`. */
function isExclusionViolation(e: unknown, constraint: string): boolean {
  for (
    let err = e as { code?: string; constraint_name?: string; cause?: unknown } | undefined;
    err;
    err = err.cause as typeof err
  ) {
    if (err.code === "23P01" && err.constraint_name === constraint) return true;
  }
  return false;
}

/**
 * The most VMs a fleet can have: its warm pool's maximum, else its size. (The pool policy read
 * directly: warm-pool.ts imports this module, not the other way round.)
 */
function fleetCapacity(fleet: { desiredSize: number; warmPool: unknown }) {
  const max = (fleet.warmPool as { maxSize?: unknown } | null)?.maxSize;
  return Math.max(fleet.desiredSize, typeof max === "number" ? max : 0);
}

/** Makes a fleet bookable, changes its limits, or (policy null) stops new bookings. Audited. */
export async function setBookingPolicy(
  db: Db,
  req: { fleetId: string; policy: BookingPolicyInput | null; actor: Actor },
) {
  return db.transaction(async (tx) => {
    const fleet = await liveFleet(tx, req.fleetId);
    const policy = req.policy === null ? null : bookingPolicySchema.parse(req.policy);
    if (policy && policy.seats > fleetCapacity(fleet)) {
      throw new DomainError(
        "INVALID_INPUT",
        `Fleet ${fleet.name} has room for ${fleetCapacity(fleet)} VMs; it cannot offer ${policy.seats} seats. Scale it (or raise its warm pool's maximum) first.`,
        { field: "seats" },
      );
    }
    await tx
      .update(fleets)
      .set({ bookingPolicy: policy, updatedAt: sql`now()` })
      .where(eq(fleets.id, fleet.id));
    await audit(
      tx,
      req.actor,
      "fleet.booking_policy_set",
      { kind: "fleet", id: fleet.id },
      {
        policy,
      },
    );
    return policy;
  });
}

export type BookRequest = {
  fleetId: string;
  userId: string;
  startsAt: Date;
  minutes: number;
  actor: Actor;
  now?: Date;
};

async function bookableFleet(db: DbOrTx, fleetId: string) {
  const [fleet] = await db.select().from(fleets).where(eq(fleets.id, fleetId));
  if (!fleet || fleet.status === "destroyed" || fleet.status === "destroying") {
    throw new DomainError("NOT_FOUND", "No such fleet.");
  }
  const policy = bookingPolicyOf(fleet.bookingPolicy);
  if (!policy) {
    throw new DomainError(
      "STATE_CONFLICT",
      `Fleet ${fleet.name} does not take bookings. Ask your admin to open it for bookings.`,
      { fleetId },
    );
  }
  return { fleet, policy };
}

const when = (d: Date) => `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;

/**
 * Inserts one booking on the first seat free for the whole range. Each seat is tried in a
 * savepoint: the exclusion constraint refuses a taken seat (23P01), and the next one is tried.
 * Two transactions racing for the same seat: the second waits for the first to commit, then gets
 * the violation — so of two concurrent bookings of the last seat exactly one wins.
 */
async function insertOnFreeSeat(
  tx: DbOrTx,
  req: {
    fleet: { id: string; name: string };
    seats: number;
    userId: string;
    startsAt: Date;
    endsAt: Date;
    label?: string | null;
    createdBy: string | null;
  },
): Promise<Booking> {
  for (let seat = 1; seat <= req.seats; seat++) {
    try {
      return await tx.transaction(async (sp) => {
        const [row] = await sp
          .insert(bookings)
          .values({
            fleetId: req.fleet.id,
            userId: req.userId,
            seat,
            startsAt: req.startsAt,
            endsAt: req.endsAt,
            label: req.label ?? null,
            createdBy: req.createdBy,
          })
          .returning();
        if (!row) throw new Error("booking insert returned no row");
        return row;
      });
    } catch (e) {
      if (isExclusionViolation(e, "bookings_seat_no_overlap")) continue;
      if (isExclusionViolation(e, "bookings_user_no_overlap")) {
        throw new DomainError(
          "STATE_CONFLICT",
          "You already have a booking at that time (one VM at a time). Cancel it or pick another time.",
          { reason: "overlap" },
        );
      }
      throw e;
    }
  }
  throw new DomainError(
    "STATE_CONFLICT",
    `All ${req.seats} seats of ${req.fleet.name} are booked for some of ${when(req.startsAt)} – ${when(req.endsAt)}. Try another time.`,
    { reason: "full", seats: req.seats },
  );
}

/** GPU-hours the researcher's live bookings on this fleet take in the 7 days up to `end`. */
async function bookedGpuHours(tx: DbOrTx, fleetId: string, userId: string, end: Date) {
  const [row] = await tx
    .select({
      hours: sql<number>`coalesce(sum(extract(epoch from (
        least(${bookings.endsAt}, ${end.toISOString()}::timestamptz) -
        greatest(${bookings.startsAt}, ${end.toISOString()}::timestamptz - interval '7 days', now())
      )) / 3600), 0)::float8`,
    })
    .from(bookings)
    .where(
      and(
        eq(bookings.fleetId, fleetId),
        eq(bookings.userId, userId),
        inArray(bookings.status, LIVE),
        gt(
          bookings.endsAt,
          sql`greatest(${end.toISOString()}::timestamptz - interval '7 days', now())`,
        ),
        sql`${bookings.startsAt} < ${end.toISOString()}::timestamptz`,
      ),
    );
  return row?.hours ?? 0;
}

/**
 * A researcher books a slot on a fleet within its policy. Refusals say why: the fleet is not
 * bookable or not theirs, the slot is too far ahead or too long, they have too many bookings,
 * their weekly GPU-hour quota would be exceeded, or every seat is taken for that time.
 */
export async function createBooking(db: Db, req: BookRequest & { role: UserRole }) {
  const now = req.now ?? new Date();
  return db.transaction(async (tx) => {
    const { fleet, policy } = await bookableFleet(tx, req.fleetId);
    await assertFleetAccessible(tx, fleet.id, { userId: req.userId, role: req.role });
    const startsAt = req.startsAt;
    const endsAt = new Date(startsAt.getTime() + req.minutes * MINUTE);
    if (startsAt.getTime() < now.getTime() - 5 * MINUTE) {
      throw new DomainError("INVALID_INPUT", "That time has passed; pick a start in the future.", {
        field: "startsAt",
      });
    }
    if (startsAt.getTime() > now.getTime() + policy.maxDaysAhead * 24 * 60 * MINUTE) {
      throw new DomainError(
        "INVALID_INPUT",
        `${fleet.name} can be booked at most ${policy.maxDaysAhead} days ahead.`,
        { field: "startsAt", maxDaysAhead: policy.maxDaysAhead },
      );
    }
    if (req.minutes > policy.maxMinutes) {
      throw new DomainError(
        "INVALID_INPUT",
        `A booking on ${fleet.name} lasts at most ${policy.maxMinutes} minutes.`,
        { field: "minutes", maxMinutes: policy.maxMinutes },
      );
    }
    const [mine] = await tx
      .select({ n: sql<number>`count(*)::int` })
      .from(bookings)
      .where(
        and(
          eq(bookings.fleetId, fleet.id),
          eq(bookings.userId, req.userId),
          inArray(bookings.status, LIVE),
          gt(bookings.endsAt, now),
        ),
      );
    if ((mine?.n ?? 0) >= policy.maxPerResearcher) {
      throw new DomainError(
        "QUOTA_EXCEEDED",
        `You already have ${mine?.n} bookings on ${fleet.name}, the most allowed. Cancel one to book another.`,
        { reason: "max_bookings", limit: policy.maxPerResearcher },
      );
    }
    if (fleet.gpuHoursPerWeek !== null) {
      // What was held in the 7 days before the end, plus what is booked in them, plus this slot.
      const [usedRow] = await tx.execute<{ used: number }>(
        sql`SELECT lablink_gpu_hours(${req.userId}::text, ${fleet.id}::uuid, ${endsAt.toISOString()}::timestamptz - interval '7 days')::float8 AS used`,
      );
      const used = Number(usedRow?.used ?? 0);
      const booked = (await bookedGpuHours(tx, fleet.id, req.userId, endsAt)) * fleet.gpuCount;
      const wanted = (req.minutes / 60) * fleet.gpuCount;
      if (used + booked + wanted > fleet.gpuHoursPerWeek) {
        const r = (n: number) => Math.round(n * 10) / 10;
        throw new DomainError(
          "QUOTA_EXCEEDED",
          `This booking needs ${r(wanted)} GPU-hours; with ${r(used)} used and ${r(booked)} already booked you would pass your ${fleet.gpuHoursPerWeek} GPU-hours a week on ${fleet.name}.`,
          { reason: "gpu_hours", limit: fleet.gpuHoursPerWeek, used: r(used), booked: r(booked) },
        );
      }
    }
    const booking = await insertOnFreeSeat(tx, {
      fleet,
      seats: policy.seats,
      userId: req.userId,
      startsAt,
      endsAt,
      createdBy: req.actor.id,
    });
    await audit(
      tx,
      req.actor,
      "booking.create",
      { kind: "booking", id: booking.id },
      {
        fleetId: fleet.id,
        userId: req.userId,
        seat: booking.seat,
        startsAt: startsAt.toISOString(),
        endsAt: endsAt.toISOString(),
      },
    );
    return booking;
  });
}

/**
 * An admin books seats for a workshop: one booking per listed researcher, all or none (one
 * transaction). Only the seats bind an admin, not the researcher limits.
 */
export async function createBlockBooking(
  db: Db,
  req: {
    fleetId: string;
    emails: string[];
    startsAt: Date;
    minutes: number;
    label: string;
    actor: Actor;
  },
) {
  return db.transaction(async (tx) => {
    const { fleet, policy } = await bookableFleet(tx, req.fleetId);
    const wanted = [...new Set(req.emails.map((e) => e.trim().toLowerCase()))];
    const found = await tx
      .select({ id: users.id, email: users.email })
      .from(users)
      .where(inArray(sql`lower(${users.email})`, wanted));
    const missing = wanted.filter((e) => !found.some((u) => u.email?.toLowerCase() === e));
    if (missing.length > 0) {
      throw new DomainError(
        "INVALID_INPUT",
        `No LabLink account for ${missing.join(", ")}. They must sign in once before they can be booked.`,
        { field: "emails", missing },
      );
    }
    const endsAt = new Date(req.startsAt.getTime() + req.minutes * MINUTE);
    const made: Booking[] = [];
    for (const u of found) {
      try {
        made.push(
          await insertOnFreeSeat(tx, {
            fleet,
            seats: policy.seats,
            userId: u.id,
            startsAt: req.startsAt,
            endsAt,
            label: req.label,
            createdBy: req.actor.id,
          }),
        );
      } catch (e) {
        if (e instanceof DomainError && e.details.reason === "overlap") {
          throw new DomainError(
            "STATE_CONFLICT",
            `${u.email} already has a booking at that time; nothing was booked.`,
            { reason: "overlap", email: u.email },
          );
        }
        if (e instanceof DomainError && e.details.reason === "full") {
          throw new DomainError(
            "STATE_CONFLICT",
            `Only ${made.length} of the ${found.length} seats are free on ${fleet.name} for that time; nothing was booked.`,
            { reason: "full", free: made.length, wanted: found.length },
          );
        }
        throw e;
      }
    }
    await audit(
      tx,
      req.actor,
      "booking.block_create",
      { kind: "fleet", id: fleet.id },
      {
        label: req.label,
        startsAt: req.startsAt.toISOString(),
        endsAt: endsAt.toISOString(),
        bookings: made.map((b) => b.id),
        users: found.map((u) => u.id),
      },
    );
    return made;
  });
}

/** Frees a VM set aside for a booking: it is claimable by anyone again. */
async function unreserve(tx: DbOrTx, bookingId: string) {
  await tx.update(vms).set({ reservedBookingId: null }).where(eq(vms.reservedBookingId, bookingId));
}

/**
 * Cancels a booking that has not started being used. A researcher cancels their own (userId
 * set); an admin any (userId null). An active booking ends by releasing its VM instead.
 */
export async function cancelBooking(
  db: Db,
  req: { bookingId: string; userId: string | null; actor: Actor },
) {
  return db.transaction(async (tx) => {
    const [b] = await tx
      .select()
      .from(bookings)
      .where(eq(bookings.id, req.bookingId))
      .for("update");
    if (!b || (req.userId !== null && b.userId !== req.userId)) {
      throw new DomainError("NOT_FOUND", "No such booking.");
    }
    if (b.status !== "booked") {
      throw new DomainError(
        "STATE_CONFLICT",
        b.status === "active"
          ? "This booking is in use: release the VM to end it."
          : `This booking is already ${b.status.replace("_", "-")}.`,
        { status: b.status },
      );
    }
    await tx
      .update(bookings)
      .set({ status: "cancelled", endedAt: sql`now()` })
      .where(eq(bookings.id, b.id));
    await unreserve(tx, b.id);
    await audit(
      tx,
      req.actor,
      "booking.cancel",
      { kind: "booking", id: b.id },
      {
        userId: b.userId,
        fleetId: b.fleetId,
        byAdmin: req.userId === null,
      },
    );
    return { ...b, status: "cancelled" as const };
  });
}

/** Fleets a researcher may book, with their limits. */
export async function bookableFleets(db: DbOrTx, viewer: NonNullable<Viewer>) {
  const rows = await db
    .select({
      id: fleets.id,
      name: fleets.name,
      gpuModel: fleets.gpuModel,
      instanceType: fleets.instanceType,
      bookingPolicy: fleets.bookingPolicy,
    })
    .from(fleets)
    .where(
      and(
        isNotNull(fleets.bookingPolicy),
        inArray(fleets.status, ["creating", "active", "scaling"]),
        fleetAccessible(fleets.id, viewer),
      ),
    )
    .orderBy(asc(fleets.name));
  return rows.flatMap(({ bookingPolicy, ...f }) => {
    const policy = bookingPolicyOf(bookingPolicy);
    return policy ? [{ ...f, policy }] : [];
  });
}

/** A researcher's bookings: upcoming and running first, then the last few that ended. */
export async function myBookings(db: DbOrTx, userId: string, { now = new Date() } = {}) {
  const rows = await db
    .select({
      id: bookings.id,
      fleetId: bookings.fleetId,
      fleetName: fleets.name,
      startsAt: bookings.startsAt,
      endsAt: bookings.endsAt,
      status: bookings.status,
      label: bookings.label,
      vmId: bookings.vmId,
      policy: fleets.bookingPolicy,
    })
    .from(bookings)
    .innerJoin(fleets, eq(fleets.id, bookings.fleetId))
    .where(
      and(
        eq(bookings.userId, userId),
        or(inArray(bookings.status, LIVE), gt(bookings.endsAt, sql`now() - interval '7 days'`)),
      ),
    )
    .orderBy(desc(inArray(bookings.status, LIVE)), asc(bookings.startsAt))
    .limit(50);
  return rows.map(({ policy, vmId, ...b }) => {
    const p = bookingPolicyOf(policy);
    return {
      ...b,
      /** The VM set aside for it is ready: the booker may claim it now. */
      vmReady: b.status === "booked" && vmId !== null,
      /** A booked VM not claimed by then is a no-show. */
      claimBy:
        b.status === "booked" && p
          ? new Date(b.startsAt.getTime() + p.graceMinutes * MINUTE)
          : null,
      startsSoon:
        b.status === "booked" &&
        b.startsAt.getTime() - now.getTime() < (p?.leadMinutes ?? 15) * MINUTE,
    };
  });
}

/**
 * The booker takes the VM set aside for their booking: it becomes a normal hold (claimed, with
 * its assignment), and the booking `active` until its end, when the activation job releases it.
 */
export async function claimBookedVm(
  db: Db,
  req: { userId: string; bookingId: string; actor: Actor },
) {
  return db.transaction(async (tx) => {
    const [b] = await tx
      .select()
      .from(bookings)
      .where(and(eq(bookings.id, req.bookingId), eq(bookings.userId, req.userId)))
      .for("update");
    if (!b) throw new DomainError("NOT_FOUND", "No such booking.");
    if (b.status !== "booked") {
      throw new DomainError("STATE_CONFLICT", `This booking is ${b.status.replace("_", "-")}.`, {
        status: b.status,
      });
    }
    if (!b.vmId) {
      throw new DomainError(
        "NO_CAPACITY",
        "Your booked VM is not ready yet: it is set aside shortly before your start. Try again in a minute.",
      );
    }
    const [held] = await tx
      .select({ id: vms.id })
      .from(vms)
      .where(and(eq(vms.holderId, req.userId), inArray(vms.state, HOLDER_STATES)));
    if (held) {
      throw new DomainError(
        "STATE_CONFLICT",
        "You already hold a VM. Release it first to take your booked one.",
      );
    }
    const vm = await transition(tx, {
      vmId: b.vmId,
      from: "ready",
      to: "claimed",
      actor: req.actor,
      action: "vm.claim",
      patch: {
        holderId: req.userId,
        assignmentId: crypto.randomUUID(),
        claimedAt: new Date(),
        releasedAt: null,
      },
      details: { bookingId: b.id },
    });
    await tx
      .update(vms)
      .set({ reservedBookingId: null, assignmentAckedId: null })
      .where(eq(vms.id, vm.id));
    await tx.update(bookings).set({ status: "active" }).where(eq(bookings.id, b.id));
    await audit(tx, req.actor, "booking.claim", { kind: "booking", id: b.id }, { vmId: vm.id });
    return vm;
  });
}

export type BookingMail = { mailer: Mailer; from: string; publicUrl: string };

export type BookingRun = {
  held: string[];
  noShow: string[];
  ended: string[];
  /** Set-asides undone because the VM stopped being ready (another is found next run). */
  lost: string[];
};

/**
 * The activation job's one pass (every ~15 s), clock injectable:
 * 1. a set-aside VM that is no longer ready and healthy is let go (the booking waits for another);
 * 2. each booking within its fleet's lead window gets a ready VM set aside (SKIP LOCKED, so it
 *    never waits on or takes a VM a claim is taking);
 * 3. a booking whose booker has not claimed within the grace period becomes a no-show: its VM
 *    goes back to the pool (audited, the booker emailed if mail is configured);
 * 4. a running booking past its end releases its VM (the normal wipe); one whose VM was released
 *    earlier is done.
 */
export async function runBookings(
  db: Db,
  opts: { now?: Date; mail?: BookingMail; log?: { warn: (o: object, m: string) => void } } = {},
): Promise<BookingRun> {
  const now = opts.now ?? new Date();
  const out: BookingRun = { held: [], noShow: [], ended: [], lost: [] };

  // 1. Set-asides whose VM left the pool (failed, unhealthy, drained, terminated).
  const lost = await db
    .select({ id: bookings.id, vmId: bookings.vmId })
    .from(bookings)
    .innerJoin(vms, eq(vms.id, bookings.vmId))
    .where(
      and(eq(bookings.status, "booked"), or(sql`${vms.state} <> 'ready'`, eq(vms.healthy, false))),
    );
  for (const l of lost) {
    await db.transaction(async (tx) => {
      await tx
        .update(bookings)
        .set({ vmId: null, heldAt: null })
        .where(and(eq(bookings.id, l.id), eq(bookings.status, "booked")));
      await unreserve(tx, l.id);
      await audit(
        tx,
        systemActor,
        "booking.vm_lost",
        { kind: "booking", id: l.id },
        {
          vmId: l.vmId,
        },
      );
    });
    out.lost.push(l.id);
  }

  const live = await db
    .select({ booking: bookings, policy: fleets.bookingPolicy })
    .from(bookings)
    .innerJoin(fleets, eq(fleets.id, bookings.fleetId))
    .where(
      and(
        inArray(bookings.status, LIVE),
        lte(bookings.startsAt, sql`${now.toISOString()}::timestamptz + interval '4 hours'`),
      ),
    )
    .orderBy(asc(bookings.startsAt), asc(bookings.createdAt));

  for (const { booking: b, policy: raw } of live) {
    const policy = bookingPolicyOf(raw) ?? bookingPolicySchema.parse({ seats: 1 });
    const start = b.startsAt.getTime();
    const t = now.getTime();
    if (b.status === "booked" && b.endsAt.getTime() <= t) {
      // Ended without ever being claimed (no VM became free, or the no-show below came late).
      await endBooked(db, b, b.vmId ? "no_show" : "done", opts);
      (b.vmId ? out.noShow : out.ended).push(b.id);
      continue;
    }
    if (b.status === "booked" && b.vmId && t >= start + policy.graceMinutes * MINUTE) {
      await endBooked(db, b, "no_show", opts);
      out.noShow.push(b.id);
      continue;
    }
    if (b.status === "booked" && !b.vmId && t >= start - policy.leadMinutes * MINUTE) {
      const vmId = await setAside(db, b);
      if (vmId) out.held.push(b.id);
      continue;
    }
    if (b.status === "active") {
      if (await endActive(db, b, now)) out.ended.push(b.id);
    }
  }
  return out;
}

/** Sets a ready VM of the booking's fleet aside for it; null when none is free right now. */
async function setAside(db: Db, b: Booking): Promise<string | null> {
  return db.transaction(async (tx) => {
    const [vm] = await tx.execute<{ id: string }>(sql`
      UPDATE vms SET reserved_booking_id = ${b.id}
      WHERE id = (
        SELECT id FROM vms
        WHERE fleet_id = ${b.fleetId} AND state = 'ready' AND healthy
          AND holder_id IS NULL AND reserved_booking_id IS NULL
        ORDER BY state_changed_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
      RETURNING id`);
    if (!vm) return null;
    const [updated] = await tx
      .update(bookings)
      .set({ vmId: vm.id, heldAt: sql`now()` })
      .where(and(eq(bookings.id, b.id), eq(bookings.status, "booked"), isNull(bookings.vmId)))
      .returning({ id: bookings.id });
    if (!updated) {
      // Cancelled (or set aside by another worker) meanwhile: give the VM back.
      await tx.update(vms).set({ reservedBookingId: null }).where(eq(vms.id, vm.id));
      return null;
    }
    await audit(
      tx,
      systemActor,
      "booking.vm_held",
      { kind: "booking", id: b.id },
      {
        vmId: vm.id,
        userId: b.userId,
      },
    );
    return vm.id;
  });
}

async function endBooked(
  db: Db,
  b: Booking,
  status: "no_show" | "done",
  opts: { mail?: BookingMail; log?: { warn: (o: object, m: string) => void } },
) {
  const changed = await db.transaction(async (tx) => {
    const [row] = await tx
      .update(bookings)
      .set({ status, endedAt: sql`now()`, vmId: status === "no_show" ? b.vmId : null })
      .where(and(eq(bookings.id, b.id), eq(bookings.status, "booked")))
      .returning({ id: bookings.id });
    if (!row) return false;
    await unreserve(tx, b.id);
    await audit(
      tx,
      systemActor,
      status === "no_show" ? "booking.no_show" : "booking.unfilled",
      { kind: "booking", id: b.id },
      { userId: b.userId, vmId: b.vmId, fleetId: b.fleetId },
    );
    return true;
  });
  if (changed && status === "no_show" && opts.mail) {
    const [u] = await db
      .select({ email: users.email, name: users.name })
      .from(users)
      .where(eq(users.id, b.userId));
    if (!u?.email) return;
    try {
      await opts.mail.mailer.sendMail({
        from: opts.mail.from,
        to: u.email,
        subject: "Your LabLink booking was released",
        text:
          `Hello ${u.name ?? u.email},\n\n` +
          `A VM was held for your booking starting ${when(b.startsAt)}, but it was not claimed ` +
          "within the grace period, so it went back to the pool for others.\n\n" +
          `You can still claim a free VM or book again: ${new URL("/", opts.mail.publicUrl).toString()}\n`,
      });
    } catch (err) {
      opts.log?.warn({ err, bookingId: b.id }, "could not email the no-show notice");
    }
  }
}

/** Ends a running booking at its end (releasing its VM), or once its VM was released. */
async function endActive(db: Db, b: Booking, now: Date): Promise<boolean> {
  const [vm] = b.vmId
    ? await db
        .select({ state: vms.state, holderId: vms.holderId })
        .from(vms)
        .where(eq(vms.id, b.vmId))
    : [];
  const stillHeld =
    vm && vm.holderId === b.userId && (HOLDER_STATES as readonly string[]).includes(vm.state);
  if (stillHeld && b.endsAt.getTime() > now.getTime()) return false;
  return db.transaction(async (tx) => {
    const [row] = await tx
      .update(bookings)
      .set({ status: "done", endedAt: sql`now()` })
      .where(and(eq(bookings.id, b.id), eq(bookings.status, "active")))
      .returning({ id: bookings.id });
    if (!row) return false;
    if (stillHeld && b.vmId && (vm?.state === "claimed" || vm?.state === "draining")) {
      await transition(tx, {
        vmId: b.vmId,
        from: ["claimed", "draining"],
        to: "releasing",
        actor: systemActor,
        action: "vm.booking_ended",
        patch: { releasedAt: new Date() },
        details: { holderId: b.userId, bookingId: b.id },
      });
    }
    await audit(
      tx,
      systemActor,
      "booking.end",
      { kind: "booking", id: b.id },
      {
        userId: b.userId,
        released: !!stillHeld,
      },
    );
    return true;
  });
}

/**
 * Bookings in each fleet's lead window that have no VM set aside yet: the warm pool keeps this
 * many more ready VMs, and walk-in claims leave this many ready VMs alone.
 */
export async function upcomingUnheld(db: DbOrTx, fleetId: string, now: Date): Promise<number> {
  const [row] = await db
    .select({ n: sql<number>`count(*)::int` })
    .from(bookings)
    .innerJoin(fleets, eq(fleets.id, bookings.fleetId))
    .where(
      and(
        eq(bookings.fleetId, fleetId),
        eq(bookings.status, "booked"),
        isNull(bookings.vmId),
        gt(bookings.endsAt, now),
        sql`${bookings.startsAt} <= ${now.toISOString()}::timestamptz + make_interval(mins => coalesce((${fleets.bookingPolicy}->>'leadMinutes')::int, 15))`,
      ),
    );
  return row?.n ?? 0;
}

/**
 * The admin's calendar of one fleet: its seats, the bookings in [from, from + days), and for each
 * hour how many seats are booked.
 */
export async function bookingCalendar(
  db: DbOrTx,
  req: { fleetId: string; from: Date; days: number },
) {
  const [fleet] = await db.select().from(fleets).where(eq(fleets.id, req.fleetId));
  if (!fleet) throw new DomainError("NOT_FOUND", "No such fleet.");
  const policy = bookingPolicyOf(fleet.bookingPolicy);
  const to = new Date(req.from.getTime() + req.days * 24 * 60 * MINUTE);
  const list = await db
    .select({
      id: bookings.id,
      seat: bookings.seat,
      startsAt: bookings.startsAt,
      endsAt: bookings.endsAt,
      status: bookings.status,
      label: bookings.label,
      userId: bookings.userId,
      email: users.email,
      name: users.name,
    })
    .from(bookings)
    .innerJoin(users, eq(users.id, bookings.userId))
    .where(
      and(
        eq(bookings.fleetId, fleet.id),
        sql`${bookings.startsAt} < ${to.toISOString()}::timestamptz`,
        gt(bookings.endsAt, req.from),
        inArray(bookings.status, ["booked", "active", "done", "no_show"]),
      ),
    )
    .orderBy(asc(bookings.startsAt), asc(bookings.seat));
  const hours = await db.execute<{ at: string; booked: number }>(sql`
    SELECT h.at, count(b.id)::int AS booked
    FROM generate_series(${req.from.toISOString()}::timestamptz, ${to.toISOString()}::timestamptz - interval '1 hour', interval '1 hour') AS h(at)
    LEFT JOIN bookings b ON b.fleet_id = ${fleet.id} AND b.status IN ('booked', 'active')
      AND tstzrange(b.starts_at, b.ends_at) && tstzrange(h.at, h.at + interval '1 hour')
    GROUP BY h.at ORDER BY h.at`);
  return {
    fleet: { id: fleet.id, name: fleet.name, size: fleetCapacity(fleet) },
    policy,
    seats: policy?.seats ?? 0,
    bookings: list,
    hours: [...hours].map((h) => ({ at: new Date(h.at), booked: Number(h.booked) })),
  };
}
