import { z } from "zod";
import {
  bookableFleets,
  bookingCalendar,
  bookingPolicySchema,
  cancelBooking,
  claimBookedVm,
  createBlockBooking,
  createBooking,
  myBookings,
  setBookingPolicy,
} from "../../domain/bookings";
import { adminProcedure, createRouter, noInput, researcherProcedure } from "../trpc";

/** A slot's length: 15 minutes to a week (each fleet's policy narrows it for researchers). */
const minutes = z
  .number()
  .int("must be a whole number of minutes")
  .min(15, "A booking lasts at least 15 minutes.")
  .max(7 * 24 * 60, "A booking lasts at most a week.");

export const bookingRouter = createRouter({
  /** Fleets the researcher may book, with their limits. */
  fleets: researcherProcedure
    .input(noInput)
    .query(({ ctx }) => bookableFleets(ctx.db, { userId: ctx.user.id, role: ctx.user.role })),

  /** The researcher's own bookings (upcoming, running, recently ended). */
  mine: researcherProcedure.input(noInput).query(({ ctx }) => myBookings(ctx.db, ctx.user.id)),

  /** Books a slot on a fleet for the caller, within the fleet's booking policy. */
  book: researcherProcedure
    .input(z.strictObject({ fleetId: z.uuid(), startsAt: z.date(), minutes }))
    .mutation(({ ctx, input }) =>
      createBooking(ctx.db, {
        ...input,
        userId: ctx.user.id,
        role: ctx.user.role,
        actor: ctx.actor,
      }),
    ),

  /** Cancels one of the caller's bookings before it is used. */
  cancel: researcherProcedure
    .input(z.strictObject({ bookingId: z.uuid() }))
    .mutation(({ ctx, input }) =>
      cancelBooking(ctx.db, { ...input, userId: ctx.user.id, actor: ctx.actor }),
    ),

  /** Takes the VM set aside for the caller's booking ("Your booked VM is ready"). */
  claim: researcherProcedure
    .input(z.strictObject({ bookingId: z.uuid() }))
    .mutation(async ({ ctx, input }) => {
      const vm = await claimBookedVm(ctx.db, { ...input, userId: ctx.user.id, actor: ctx.actor });
      return { vmId: vm.id, name: vm.name, state: vm.state };
    }),

  /** Makes a fleet bookable, changes its limits, or (null) stops new bookings. */
  setPolicy: adminProcedure
    .input(z.strictObject({ fleetId: z.uuid(), policy: bookingPolicySchema.nullable() }))
    .mutation(({ ctx, input }) => setBookingPolicy(ctx.db, { ...input, actor: ctx.actor })),

  /** Books seats for a workshop: one per listed researcher, all or none. */
  block: adminProcedure
    .input(
      z.strictObject({
        fleetId: z.uuid(),
        startsAt: z.date(),
        minutes,
        label: z.string().trim().min(1, "Name the workshop.").max(120),
        emails: z
          .array(z.email("not an email address"))
          .min(1, "List at least one researcher.")
          .max(500),
      }),
    )
    .mutation(({ ctx, input }) => createBlockBooking(ctx.db, { ...input, actor: ctx.actor })),

  /** Cancels anyone's booking before it is used. */
  cancelAny: adminProcedure
    .input(z.strictObject({ bookingId: z.uuid() }))
    .mutation(({ ctx, input }) =>
      cancelBooking(ctx.db, { ...input, userId: null, actor: ctx.actor }),
    ),

  /** A fleet's bookings and booked seats per hour, for the admin's calendar. */
  calendar: adminProcedure
    .input(
      z.strictObject({
        fleetId: z.uuid(),
        from: z.date(),
        days: z.number().int().min(1).max(31).default(7),
      }),
    )
    .query(({ ctx, input }) => bookingCalendar(ctx.db, input)),
});
