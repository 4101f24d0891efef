"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useTRPC } from "../providers";

const fmt = (d: Date | string) =>
  new Date(d).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
const fmtTime = (d: Date | string) => new Date(d).toLocaleTimeString([], { timeStyle: "short" });

/** `YYYY-MM-DDTHH:mm` in local time, for a datetime-local input. */
function localInput(d: Date) {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** Tomorrow at 09:00 local time: the usual first choice (a session tomorrow morning). */
function tomorrowMorning() {
  const d = new Date();
  d.setDate(d.getDate() + 1);
  d.setHours(9, 0, 0, 0);
  return d;
}

const STATUS_WORDS: Record<string, string> = {
  booked: "Booked",
  active: "In use",
  no_show: "Missed (released)",
  cancelled: "Cancelled",
  done: "Ended",
};

/**
 * The researcher's bookings on My VM: book a slot on a bookable fleet, see and cancel upcoming
 * bookings, and claim the VM held for a booking once it is ready. Hidden when no fleet takes
 * bookings and the researcher has none.
 */
export function Bookings({ holdsVm }: { holdsVm: boolean }) {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const fleets = useQuery(trpc.booking.fleets.queryOptions());
  const mine = useQuery({ ...trpc.booking.mine.queryOptions(), refetchInterval: 10_000 });
  const invalidate = () => queryClient.invalidateQueries();
  const [fleetId, setFleetId] = useState("");
  const [start, setStart] = useState(() => localInput(tomorrowMorning()));
  const [minutes, setMinutes] = useState(60);
  const book = useMutation(trpc.booking.book.mutationOptions({ onSuccess: invalidate }));
  const cancel = useMutation(trpc.booking.cancel.mutationOptions({ onSuccess: invalidate }));
  const claim = useMutation(trpc.booking.claim.mutationOptions({ onSuccess: invalidate }));

  const list = fleets.data ?? [];
  const bookings = mine.data ?? [];
  if (list.length === 0 && bookings.length === 0) return null;
  const chosen = list.find((f) => f.id === fleetId) ?? list[0];
  const lengths = chosen
    ? [30, 60, 90, 120, 180, 240, 360, 480, 720, 1440].filter((m) => m <= chosen.policy.maxMinutes)
    : [];
  const ready = bookings.find((b) => b.vmReady);

  return (
    <section
      aria-labelledby="bookings-heading"
      className="space-y-4 rounded-lg border border-slate-200 bg-white p-6 dark:border-slate-800 dark:bg-slate-900"
    >
      <h2 id="bookings-heading" className="text-xl font-semibold">
        Bookings
      </h2>
      {ready && !holdsVm && (
        <div
          role="status"
          data-testid="booked-vm-ready"
          className="flex flex-wrap items-center gap-3 rounded border border-emerald-300 bg-emerald-50 p-3 text-sm dark:border-emerald-800 dark:bg-emerald-950"
        >
          <span>
            Your booked VM on {ready.fleetName} is ready. Claim it by{" "}
            {ready.claimBy ? fmtTime(ready.claimBy) : "the start"}, or it goes back to the pool.
          </span>
          <button
            type="button"
            onClick={() => claim.mutate({ bookingId: ready.id })}
            disabled={claim.isPending}
            className="rounded bg-emerald-700 px-3 py-1.5 font-medium text-white hover:bg-emerald-800 disabled:opacity-60"
          >
            {claim.isPending ? "Claiming…" : "Claim your booked VM"}
          </button>
        </div>
      )}
      {claim.isError && (
        <p role="alert" className="text-sm text-red-700 dark:text-red-300">
          {claim.error.message}
        </p>
      )}
      {chosen && (
        <form
          className="flex flex-wrap items-end gap-3"
          onSubmit={(e) => {
            e.preventDefault();
            book.mutate({ fleetId: chosen.id, startsAt: new Date(start), minutes });
          }}
        >
          <div>
            <label htmlFor="book-fleet" className="mb-1 block text-sm font-medium">
              Fleet
            </label>
            <select
              id="book-fleet"
              value={chosen.id}
              onChange={(e) => setFleetId(e.target.value)}
              className="rounded border border-slate-300 px-3 py-2 text-sm dark:border-slate-700 dark:bg-slate-950"
            >
              {list.map((f) => (
                <option key={f.id} value={f.id}>
                  {f.name}: {f.instanceType}
                  {f.gpuModel ? ` (${f.gpuModel})` : ""}
                </option>
              ))}
            </select>
          </div>
          <div>
            <label htmlFor="book-start" className="mb-1 block text-sm font-medium">
              Start
            </label>
            <input
              id="book-start"
              type="datetime-local"
              value={start}
              onChange={(e) => setStart(e.target.value)}
              required
              className="rounded border border-slate-300 px-3 py-2 text-sm dark:border-slate-700 dark:bg-slate-950"
            />
          </div>
          <div>
            <label htmlFor="book-length" className="mb-1 block text-sm font-medium">
              Length
            </label>
            <select
              id="book-length"
              value={minutes}
              onChange={(e) => setMinutes(Number(e.target.value))}
              className="rounded border border-slate-300 px-3 py-2 text-sm dark:border-slate-700 dark:bg-slate-950"
            >
              {lengths.map((m) => (
                <option key={m} value={m}>
                  {m < 60 ? `${m} min` : `${m / 60} h`}
                </option>
              ))}
            </select>
          </div>
          <button
            type="submit"
            disabled={book.isPending}
            className="rounded bg-indigo-600 px-4 py-2 font-medium text-white hover:bg-indigo-700 disabled:opacity-60"
          >
            {book.isPending ? "Booking…" : "Book"}
          </button>
          <p className="w-full text-xs text-slate-600 dark:text-slate-400">
            Up to {chosen.policy.maxDaysAhead} days ahead, {chosen.policy.maxMinutes} minutes at
            most, {chosen.policy.maxPerResearcher} booking
            {chosen.policy.maxPerResearcher === 1 ? "" : "s"} at a time. A VM is held for you from
            your start; claim it within {chosen.policy.graceMinutes} minutes.
          </p>
        </form>
      )}
      {book.isError && (
        <p
          role="alert"
          data-testid="booking-error"
          className="text-sm text-red-700 dark:text-red-300"
        >
          {book.error.message}
        </p>
      )}
      {book.isSuccess && (
        <p role="status" className="text-sm text-emerald-800 dark:text-emerald-300">
          Booked {fmt(book.data.startsAt)} – {fmtTime(book.data.endsAt)}.
        </p>
      )}
      {bookings.length > 0 && (
        <table className="w-full text-left text-sm" data-testid="my-bookings">
          <caption className="sr-only">Your bookings</caption>
          <thead>
            <tr className="border-b border-slate-200 dark:border-slate-800">
              <th className="py-1 pr-3 font-medium">Fleet</th>
              <th className="py-1 pr-3 font-medium">When</th>
              <th className="py-1 pr-3 font-medium">Status</th>
              <th className="py-1 font-medium">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {bookings.map((b) => (
              <tr key={b.id} className="border-b border-slate-100 dark:border-slate-800">
                <td className="py-1 pr-3">
                  {b.fleetName}
                  {b.label ? ` · ${b.label}` : ""}
                </td>
                <td className="py-1 pr-3">
                  {fmt(b.startsAt)} – {fmtTime(b.endsAt)}
                </td>
                <td className="py-1 pr-3">
                  {b.vmReady ? "VM ready" : (STATUS_WORDS[b.status] ?? b.status)}
                </td>
                <td className="py-1 text-right">
                  {b.status === "booked" && (
                    <button
                      type="button"
                      onClick={() => cancel.mutate({ bookingId: b.id })}
                      disabled={cancel.isPending}
                      aria-label={`Cancel booking on ${b.fleetName} at ${fmt(b.startsAt)}`}
                      className="rounded border border-slate-400 px-2 py-1 text-xs hover:bg-slate-100 dark:border-slate-600 dark:hover:bg-slate-800"
                    >
                      Cancel
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {cancel.isError && (
        <p role="alert" className="text-sm text-red-700 dark:text-red-300">
          {cancel.error.message}
        </p>
      )}
    </section>
  );
}
