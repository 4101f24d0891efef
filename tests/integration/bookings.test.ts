import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { and, eq, inArray, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalFleetDriver } from "../../server/cloud/local/driver";
import {
  auditEvents,
  bookings,
  type Fleet,
  fleetGroups,
  groups,
  operations,
  type users,
  type Vm,
  vms,
} from "../../server/db/schema";
import { claimVm } from "../../server/domain/allocation";
import {
  type BookingPolicyInput,
  bookingCalendar,
  cancelBooking,
  claimBookedVm,
  createBlockBooking,
  createBooking,
  myBookings,
  runBookings,
  setBookingPolicy,
} from "../../server/domain/bookings";
import { fleetLedger } from "../../server/domain/convergence";
import { isDomainError } from "../../server/domain/errors";
import { poolSummary } from "../../server/domain/pool";
import { reconcileWarmPools, setWarmPool } from "../../server/domain/warm-pool";
import { executeOperation } from "../../server/jobs/operations";
import { logger } from "../../server/log";
import type { Mailer } from "../../server/mail";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeUsers, makeVms } from "../fixtures";
import { startApiServer } from "../http";
import { waitFor } from "./helpers/wait";

type User = typeof users.$inferSelect;

let t: TestDatabase;
let admin: User;
const MIN = 60_000;
const adminActor = () => ({ kind: "user" as const, id: admin.id });
const as = (u: User) => ({ kind: "user" as const, id: u.id });

beforeAll(async () => {
  t = await createTestDatabase({ max: 20 });
  admin = (await makeUser(t.db, "admin")) as User;
});
afterAll(() => t?.drop());

/** A fleet of `ready` VM rows (no agents) open for bookings. */
async function bookableFleet(size: number, policy: Partial<BookingPolicyInput> = {}) {
  const fleet = await makeFleet(t.db, { desiredSize: size });
  const fleetVms = await makeVms(t.db, fleet, size, "ready");
  await setBookingPolicy(t.db, {
    fleetId: fleet.id,
    policy: { seats: size, ...policy },
    actor: adminActor(),
  });
  return { fleet, vms: fleetVms };
}

const book = (fleet: Fleet, u: User, startsAt: Date, minutes = 60, now?: Date) =>
  createBooking(t.db, {
    fleetId: fleet.id,
    userId: u.id,
    role: "researcher",
    startsAt,
    minutes,
    actor: as(u),
    now,
  });

/** The domain error a promise rejects with (fails the test if it resolves). */
async function refusal(p: Promise<unknown>) {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  if (!isDomainError(e)) throw new Error(`expected a domain error, got ${String(e)}`);
  return e;
}

const bookingRow = async (id: string) =>
  (await t.db.select().from(bookings).where(eq(bookings.id, id)))[0];
const vmRow = async (id: string) => (await t.db.select().from(vms).where(eq(vms.id, id)))[0] as Vm;

describe("the database refuses overlapping bookings", () => {
  it("a direct insert of an overlapping booking on a taken seat violates the exclusion constraint", async () => {
    const { fleet } = await bookableFleet(1);
    const [a, b] = (await makeUsers(t.db, 2)) as [User, User];
    const start = new Date(Date.now() + 24 * 60 * MIN);
    const end = new Date(start.getTime() + 60 * MIN);
    await t.db
      .insert(bookings)
      .values({ fleetId: fleet.id, userId: a.id, seat: 1, startsAt: start, endsAt: end });
    const overlapping = t.db.insert(bookings).values({
      fleetId: fleet.id,
      userId: b.id,
      seat: 1,
      startsAt: new Date(start.getTime() + 30 * MIN),
      endsAt: new Date(end.getTime() + 30 * MIN),
    });
    await expect(overlapping).rejects.toMatchObject({
      cause: { code: "23P01", constraint_name: "bookings_seat_no_overlap" },
    });
    // Back to back is not an overlap ([start, end) ranges), and a cancelled booking frees its seat.
    await t.db.insert(bookings).values({
      fleetId: fleet.id,
      userId: b.id,
      seat: 1,
      startsAt: end,
      endsAt: new Date(end.getTime() + 60 * MIN),
    });
    await t.db.update(bookings).set({ status: "cancelled" }).where(eq(bookings.userId, a.id));
    await t.db.insert(bookings).values({
      fleetId: fleet.id,
      userId: b.id,
      seat: 1,
      startsAt: start,
      endsAt: new Date(start.getTime() + 10 * MIN),
    });
  });

  it("a researcher cannot hold two live bookings at once, even on different fleets", async () => {
    const { fleet: f1 } = await bookableFleet(1);
    const { fleet: f2 } = await bookableFleet(1);
    const u = (await makeUser(t.db)) as User;
    const start = new Date(Date.now() + 2 * 24 * 60 * MIN);
    await book(f1, u, start, 60);
    const e = await refusal(book(f2, u, new Date(start.getTime() + 30 * MIN), 60));
    expect(e.code).toBe("STATE_CONFLICT");
    expect(e.message).toMatch(/already have a booking at that time/);
  });
});

describe("booking a slot", () => {
  it("two researchers booking the last seat at the same moment: exactly one wins", async () => {
    const { fleet } = await bookableFleet(1);
    const [a, b] = (await makeUsers(t.db, 2)) as [User, User];
    const start = new Date(Date.now() + 60 * MIN);
    const results = await Promise.allSettled([
      book(fleet, a, start, 60),
      book(fleet, b, start, 90),
    ]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(lost.reason.code).toBe("STATE_CONFLICT");
    expect(lost.reason.message).toMatch(/All 1 seats of .* are booked/);
    const live = await t.db.select().from(bookings).where(eq(bookings.fleetId, fleet.id));
    expect(live).toHaveLength(1);
  });

  it("ten researchers racing for three seats: three win, each on its own seat", async () => {
    const { fleet } = await bookableFleet(3);
    const people = (await makeUsers(t.db, 10)) as User[];
    const start = new Date(Date.now() + 3 * 60 * MIN);
    const results = await Promise.allSettled(people.map((u) => book(fleet, u, start, 60)));
    const won = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    expect(won).toHaveLength(3);
    expect(won.map((b) => b.seat).sort()).toEqual([1, 2, 3]);
    for (const r of results)
      if (r.status === "rejected") expect(r.reason.code).toBe("STATE_CONFLICT");
  });

  it("refuses slots outside the fleet's limits, saying why", async () => {
    const { fleet } = await bookableFleet(2, {
      maxDaysAhead: 7,
      maxMinutes: 120,
      maxPerResearcher: 1,
    });
    const u = (await makeUser(t.db)) as User;
    const now = new Date();
    const far = await refusal(book(fleet, u, new Date(now.getTime() + 8 * 24 * 60 * MIN), 60, now));
    expect(far.code).toBe("INVALID_INPUT");
    expect(far.message).toMatch(/at most 7 days ahead/);
    const long = await refusal(book(fleet, u, new Date(now.getTime() + 60 * MIN), 180, now));
    expect(long.message).toMatch(/at most 120 minutes/);
    const past = await refusal(book(fleet, u, new Date(now.getTime() - 60 * MIN), 60, now));
    expect(past.message).toMatch(/passed/);
    await book(fleet, u, new Date(now.getTime() + 60 * MIN), 60, now);
    const many = await refusal(book(fleet, u, new Date(now.getTime() + 24 * 60 * MIN), 60, now));
    expect(many.code).toBe("QUOTA_EXCEEDED");
    expect(many.message).toMatch(/already have 1 bookings/);

    const closed = await makeFleet(t.db, { desiredSize: 1 });
    const notBookable = await refusal(book(closed, u, new Date(now.getTime() + 60 * MIN)));
    expect(notBookable.code).toBe("STATE_CONFLICT");
    expect(notBookable.message).toMatch(/does not take bookings/);
  });

  it("bookings count against the weekly GPU-hour quota", async () => {
    const { fleet } = await bookableFleet(2, { maxPerResearcher: 5 });
    await t.db.execute(sql`UPDATE fleets SET gpu_hours_per_week = 3 WHERE id = ${fleet.id}`);
    const u = (await makeUser(t.db)) as User;
    const day = new Date(Date.now() + 24 * 60 * MIN);
    await book(fleet, u, day, 120);
    const over = await refusal(book(fleet, u, new Date(day.getTime() + 3 * 60 * MIN), 120));
    expect(over.code).toBe("QUOTA_EXCEEDED");
    expect(over.message).toMatch(/2 already booked/);
    // One more hour still fits.
    await book(fleet, u, new Date(day.getTime() + 3 * 60 * MIN), 60);
  });

  it("a fleet restricted to groups cannot be booked by outsiders", async () => {
    const { fleet } = await bookableFleet(1);
    const [g] = await t.db.insert(groups).values({ name: "bookers-only" }).returning();
    await t.db.insert(fleetGroups).values({ fleetId: fleet.id, groupId: g?.id as string });
    const outsider = (await makeUser(t.db)) as User;
    const e = await refusal(book(fleet, outsider, new Date(Date.now() + 60 * MIN)));
    expect(e.code).toBe("FORBIDDEN");
  });

  it("an admin's block booking takes a seat per researcher, all or none", async () => {
    const { fleet } = await bookableFleet(3);
    const people = (await makeUsers(t.db, 4)) as User[];
    const start = new Date(Date.now() + 5 * 24 * 60 * MIN);
    const made = await createBlockBooking(t.db, {
      fleetId: fleet.id,
      emails: people.slice(0, 2).map((p) => p.email as string),
      startsAt: start,
      minutes: 8 * 60, // longer than a researcher may book: only seats bind an admin
      label: "GPU workshop",
      actor: adminActor(),
    });
    expect(made.map((b) => b.seat).sort()).toEqual([1, 2]);
    const tooMany = await refusal(
      createBlockBooking(t.db, {
        fleetId: fleet.id,
        emails: people.slice(2, 4).map((p) => p.email as string),
        startsAt: start,
        minutes: 60,
        label: "second",
        actor: adminActor(),
      }),
    );
    expect(tooMany.message).toMatch(/Only 1 of the 2 seats are free/);
    // Nothing of the refused block was kept.
    const rows = await t.db.select().from(bookings).where(eq(bookings.fleetId, fleet.id));
    expect(rows).toHaveLength(2);
    const cal = await bookingCalendar(t.db, { fleetId: fleet.id, from: start, days: 1 });
    expect(cal.seats).toBe(3);
    expect(cal.hours[0]?.booked).toBe(2);
    expect(cal.hours[8]?.booked).toBe(0);
    expect(cal.bookings.map((b) => b.label)).toEqual(["GPU workshop", "GPU workshop"]);
  });
});

describe("activation: a VM held for the booker", () => {
  it("a booked VM is not claimable by others; the booker claims it and it is released at the end", async () => {
    const { fleet } = await bookableFleet(2, { leadMinutes: 15, graceMinutes: 10 });
    const [booker, other, third] = (await makeUsers(t.db, 3)) as [User, User, User];
    const start = new Date(Date.now() + 5 * MIN);
    const b = await book(fleet, booker, start, 60);

    const run = await runBookings(t.db);
    expect(run.held).toEqual([b.id]);
    const held = await bookingRow(b.id);
    expect(held?.vmId).toBeTruthy();
    expect((await vmRow(held?.vmId as string)).reservedBookingId).toBe(b.id);
    // A second run changes nothing (idempotent).
    expect((await runBookings(t.db)).held).toEqual([]);

    // Another researcher gets the other VM, never the held one; a third gets none.
    const walkIn = await claimVm(t.db, { userId: other.id, fleetId: fleet.id, actor: as(other) });
    expect(walkIn.vm.id).not.toBe(held?.vmId);
    const none = await refusal(
      claimVm(t.db, { userId: third.id, fleetId: fleet.id, actor: as(third) }),
    );
    expect(none.code).toBe("NO_CAPACITY");
    expect(none.message).toMatch(/1 held for bookings starting soon/);
    // The pool summary does not offer it either.
    const summary = await poolSummary(t.db, { userId: third.id, role: "researcher" });
    expect(summary.fleets.find((f) => f.fleetId === fleet.id)).toMatchObject({
      ready: 0,
      inUse: 2, // the walk-in's VM and the one held for the booking
      unhealthy: 0,
    });

    const mine = await myBookings(t.db, booker.id);
    expect(mine[0]).toMatchObject({ id: b.id, status: "booked", vmReady: true });
    const vm = await claimBookedVm(t.db, { userId: booker.id, bookingId: b.id, actor: as(booker) });
    expect(vm.id).toBe(held?.vmId);
    expect(vm.state).toBe("claimed");
    expect(vm.holderId).toBe(booker.id);
    expect((await vmRow(vm.id)).reservedBookingId).toBeNull();
    expect((await bookingRow(b.id))?.status).toBe("active");

    // Before the end nothing happens; at the end the hold ends through the normal release.
    expect((await runBookings(t.db, { now: new Date(start.getTime() + 30 * MIN) })).ended).toEqual(
      [],
    );
    const end = await runBookings(t.db, { now: new Date(start.getTime() + 61 * MIN) });
    expect(end.ended).toEqual([b.id]);
    expect((await vmRow(vm.id)).state).toBe("releasing");
    expect((await bookingRow(b.id))?.status).toBe("done");
  });

  it("a booker who does not come within the grace period is a no-show: the VM returns to the pool", async () => {
    const { fleet } = await bookableFleet(1, { leadMinutes: 15, graceMinutes: 10 });
    const [booker, other] = (await makeUsers(t.db, 2)) as [User, User];
    const start = new Date(Date.now() + 2 * MIN);
    const b = await book(fleet, booker, start, 60);
    await runBookings(t.db);
    const vmId = (await bookingRow(b.id))?.vmId as string;
    expect(vmId).toBeTruthy();
    const mails: Record<string, unknown>[] = [];
    const mailer: Mailer = {
      async sendMail(m) {
        mails.push(m);
      },
    };
    const mail = { mailer, from: "lablink@example.edu", publicUrl: "https://lablink.example.edu" };

    // Within the grace period the VM stays held.
    const early = await runBookings(t.db, { now: new Date(start.getTime() + 9 * MIN), mail });
    expect(early.noShow).toEqual([]);
    const late = await runBookings(t.db, { now: new Date(start.getTime() + 10 * MIN + 1), mail });
    expect(late.noShow).toEqual([b.id]);
    expect((await bookingRow(b.id))?.status).toBe("no_show");
    expect((await vmRow(vmId)).reservedBookingId).toBeNull();
    const [event] = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.action, "booking.no_show"), eq(auditEvents.targetId, b.id)));
    expect(event?.actorKind).toBe("system");
    expect(mails).toHaveLength(1);
    expect(mails[0]).toMatchObject({
      to: booker.email,
      subject: "Your LabLink booking was released",
    });
    // The VM is anyone's again, and the booker's late claim is refused with the reason.
    const walkIn = await claimVm(t.db, { userId: other.id, fleetId: fleet.id, actor: as(other) });
    expect(walkIn.vm.id).toBe(vmId);
    const tooLate = await refusal(
      claimBookedVm(t.db, { userId: booker.id, bookingId: b.id, actor: as(booker) }),
    );
    expect(tooLate.message).toMatch(/no-show/);
  });

  it("walk-in claims do not take the last ready VM a booking starting soon needs, even before it is set aside", async () => {
    const { fleet } = await bookableFleet(1, { leadMinutes: 15 });
    const [booker, other] = (await makeUsers(t.db, 2)) as [User, User];
    await book(fleet, booker, new Date(Date.now() + 10 * MIN), 30);
    // No activation run has set the VM aside yet: the claim itself leaves it for the booking.
    const e = await refusal(
      claimVm(t.db, { userId: other.id, fleetId: fleet.id, actor: as(other) }),
    );
    expect(e.code).toBe("NO_CAPACITY");
    expect(e.message).toMatch(/1 held for bookings starting soon/);

    // A booking further off than the lead window leaves the VM to walk-ins meanwhile.
    const { fleet: later } = await bookableFleet(1, { leadMinutes: 15 });
    await book(later, booker, new Date(Date.now() + 60 * MIN), 30);
    const walkIn = await claimVm(t.db, { userId: other.id, fleetId: later.id, actor: as(other) });
    expect(walkIn.vm.fleetId).toBe(later.id);
  });

  it("cancelling a booking gives its held VM back", async () => {
    const { fleet } = await bookableFleet(1);
    const [booker, other] = (await makeUsers(t.db, 2)) as [User, User];
    const b = await book(fleet, booker, new Date(Date.now() + 5 * MIN), 30);
    await runBookings(t.db);
    const vmId = (await bookingRow(b.id))?.vmId as string;
    const stranger = await refusal(
      cancelBooking(t.db, { bookingId: b.id, userId: other.id, actor: as(other) }),
    );
    expect(stranger.code).toBe("NOT_FOUND");
    await cancelBooking(t.db, { bookingId: b.id, userId: booker.id, actor: as(booker) });
    expect((await vmRow(vmId)).reservedBookingId).toBeNull();
    const walkIn = await claimVm(t.db, { userId: other.id, fleetId: fleet.id, actor: as(other) });
    expect(walkIn.vm.id).toBe(vmId);
  });
});

describe("the warm pool prepares VMs for bookings (local fleet, real agents)", () => {
  let http: Awaited<ReturnType<typeof startApiServer>>;
  let local: LocalFleetDriver;

  beforeAll(async () => {
    http = await startApiServer(t.db, t.sql, 60);
    local = new LocalFleetDriver({
      ledger: fleetLedger(t.db),
      serverUrl: http.url,
      rootDir: path.resolve(import.meta.dirname, "../.."),
      stateDir: mkdtempSync(path.join(os.tmpdir(), "lablink-book-")),
      heartbeatIntervalS: 60,
      log: logger,
    });
  });
  afterAll(async () => {
    await local?.close();
    await http?.close();
  });

  it("a booking starting soon raises the pool's target; its VM boots, is held, and the booker's agent gets the assignment", async () => {
    const fleet = await makeFleet(t.db, { driver: "local", name: "book-warm", desiredSize: 0 });
    await setWarmPool(t.db, {
      fleetId: fleet.id,
      policy: { desiredReady: 0, maxSize: 2 },
      actor: adminActor(),
    });
    await setBookingPolicy(t.db, {
      fleetId: fleet.id,
      policy: { seats: 2, leadMinutes: 20 },
      actor: adminActor(),
    });
    const [booker, other] = (await makeUsers(t.db, 2)) as [User, User];
    const start = new Date(Date.now() + 60 * MIN);
    const b = await book(fleet, booker, start, 60);

    // An hour ahead the pool stays empty; 20 minutes before the start it grows by one.
    expect((await reconcileWarmPools(t.db)).fleets[0]).toMatchObject({
      action: "none",
      targetSize: 0,
    });
    const soon = new Date(start.getTime() - 19 * MIN);
    const run = await reconcileWarmPools(t.db, { now: soon });
    expect(run.fleets[0]).toMatchObject({ action: "scale", targetSize: 1 });
    const queued = await t.db
      .select({ id: operations.id })
      .from(operations)
      .where(and(eq(operations.fleetId, fleet.id), eq(operations.status, "queued")));
    for (const op of queued)
      await executeOperation({ db: t.db, drivers: { local }, log: logger }, op.id);
    await waitFor(
      "the booking's VM is ready",
      async () =>
        (
          await t.db
            .select()
            .from(vms)
            .where(and(eq(vms.fleetId, fleet.id), eq(vms.state, "ready"), eq(vms.healthy, true)))
        ).length === 1,
      30_000,
    );
    expect((await runBookings(t.db, { now: soon })).held).toEqual([b.id]);
    // Held: the pool counts it as taken, so it does not shrink; a walk-in cannot have it.
    expect((await reconcileWarmPools(t.db, { now: soon })).fleets[0]).toMatchObject({
      targetSize: 1,
    });
    expect(
      (await refusal(claimVm(t.db, { userId: other.id, fleetId: fleet.id, actor: as(other) })))
        .code,
    ).toBe("NO_CAPACITY");
    const vm = await claimBookedVm(t.db, { userId: booker.id, bookingId: b.id, actor: as(booker) });
    await waitFor(
      "the agent set up the booker's assignment",
      async () => {
        const row = await vmRow(vm.id);
        return row.assignmentAckedId !== null && row.assignmentAckedId === row.assignmentId;
      },
      30_000,
    );
    const live = await t.db
      .select()
      .from(bookings)
      .where(and(eq(bookings.id, b.id), inArray(bookings.status, ["active"])));
    expect(live).toHaveLength(1);
  });
});
