"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useTRPC } from "@/app/providers";
import {
  buttonClass,
  ConfirmButton,
  Empty,
  ErrorMessage,
  inputClass,
  Loading,
  panelClass,
  primaryClass,
} from "../ui";

const DAYS = 7;
const fmt = (d: Date | string) =>
  new Date(d).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
const fmtTime = (d: Date | string) => new Date(d).toLocaleTimeString([], { timeStyle: "short" });

/** Local midnight today: the calendar's first day. */
function today() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d;
}

function localInput(d: Date) {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

type Policy = {
  seats: number;
  maxDaysAhead: number;
  maxMinutes: number;
  maxPerResearcher: number;
  graceMinutes: number;
  leadMinutes: number;
};

const DEFAULT_POLICY: Policy = {
  seats: 1,
  maxDaysAhead: 14,
  maxMinutes: 240,
  maxPerResearcher: 2,
  graceMinutes: 15,
  leadMinutes: 15,
};

const POLICY_FIELDS: { key: keyof Policy; label: string }[] = [
  { key: "seats", label: "Seats (bookable VMs)" },
  { key: "maxDaysAhead", label: "Days ahead, at most" },
  { key: "maxMinutes", label: "Longest booking (min)" },
  { key: "maxPerResearcher", label: "Bookings per researcher" },
  { key: "graceMinutes", label: "No-show grace (min)" },
  { key: "leadMinutes", label: "Prepare VM ahead (min)" },
];

/**
 * Bookings per fleet: the booking policy, a block booking for a workshop, a calendar of booked
 * seats against capacity per hour for the next week, and the bookings with a cancel button.
 */
export function BookingsAdmin() {
  const trpc = useTRPC();
  const fleets = useQuery(trpc.fleet.list.queryOptions());
  const [picked, setPicked] = useState("");
  const list = (fleets.data ?? []).filter((f) => f.driver !== "byo" || f.bookingPolicy);
  const fleet = list.find((f) => f.id === picked) ?? list[0];

  return (
    <div className="space-y-4">
      <h1 className="text-2xl font-semibold">Bookings</h1>
      {fleets.isPending && <Loading what="fleets" />}
      <ErrorMessage error={fleets.error} />
      {fleets.isSuccess && list.length === 0 && <Empty>No fleets yet: create one first.</Empty>}
      {fleet && (
        <>
          <div>
            <label htmlFor="bookings-fleet" className="mb-1 block text-sm font-medium">
              Fleet
            </label>
            <select
              id="bookings-fleet"
              className={inputClass}
              value={fleet.id}
              onChange={(e) => setPicked(e.target.value)}
            >
              {list.map((f) => (
                <option key={f.id} value={f.id}>
                  {f.name}
                  {f.bookingPolicy ? " (bookable)" : ""}
                </option>
              ))}
            </select>
          </div>
          <FleetBookings key={fleet.id} fleetId={fleet.id} />
        </>
      )}
    </div>
  );
}

function FleetBookings({ fleetId }: { fleetId: string }) {
  const trpc = useTRPC();
  const [from] = useState(today);
  const calendar = useQuery({
    ...trpc.booking.calendar.queryOptions({ fleetId, from, days: DAYS }),
    refetchInterval: 15_000,
  });
  if (calendar.isPending) return <Loading what="the calendar" />;
  if (calendar.isError) return <ErrorMessage error={calendar.error} />;
  const c = calendar.data;
  return (
    <div className="space-y-4">
      <PolicyForm fleetId={fleetId} policy={c.policy} size={c.fleet.size} />
      {c.policy && <BlockForm fleetId={fleetId} />}
      <Calendar from={from} seats={c.seats} hours={c.hours} />
      <BookingList bookings={c.bookings} />
    </div>
  );
}

function PolicyForm({
  fleetId,
  policy,
  size,
}: {
  fleetId: string;
  policy: Policy | null;
  size: number;
}) {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const [draft, setDraft] = useState<Policy>(
    policy ?? { ...DEFAULT_POLICY, seats: Math.max(1, size) },
  );
  const set = useMutation(
    trpc.booking.setPolicy.mutationOptions({ onSuccess: () => queryClient.invalidateQueries() }),
  );
  return (
    <section aria-labelledby="policy-heading" className={panelClass}>
      <h2 id="policy-heading" className="mb-2 text-lg font-semibold">
        Booking policy
      </h2>
      <p className="mb-3 text-sm text-slate-600 dark:text-slate-400" data-testid="booking-status">
        {policy
          ? `Bookable: ${policy.seats} of the fleet's ${size} VMs can be booked at any time.`
          : `Not bookable. The fleet has room for ${size} VMs.`}
      </p>
      <form
        className="flex flex-wrap items-end gap-3"
        onSubmit={(e) => {
          e.preventDefault();
          set.mutate({ fleetId, policy: draft });
        }}
      >
        {POLICY_FIELDS.map(({ key, label }) => (
          <div key={key}>
            <label htmlFor={`policy-${key}`} className="mb-1 block text-sm">
              {label}
            </label>
            <input
              id={`policy-${key}`}
              type="number"
              min={1}
              className={`${inputClass} w-28`}
              value={draft[key]}
              onChange={(e) => setDraft({ ...draft, [key]: Number(e.target.value) })}
            />
          </div>
        ))}
        <button type="submit" className={primaryClass} disabled={set.isPending}>
          {policy ? "Save policy" : "Open for bookings"}
        </button>
        {policy && (
          <button
            type="button"
            className={buttonClass}
            disabled={set.isPending}
            onClick={() => set.mutate({ fleetId, policy: null })}
          >
            Stop taking bookings
          </button>
        )}
      </form>
      <ErrorMessage error={set.error} />
    </section>
  );
}

function BlockForm({ fleetId }: { fleetId: string }) {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const [label, setLabel] = useState("");
  const [start, setStart] = useState(() => {
    const d = today();
    d.setDate(d.getDate() + 1);
    d.setHours(9);
    return localInput(d);
  });
  const [hours, setHours] = useState(3);
  const [emails, setEmails] = useState("");
  const block = useMutation(
    trpc.booking.block.mutationOptions({ onSuccess: () => queryClient.invalidateQueries() }),
  );
  return (
    <section aria-labelledby="block-heading" className={panelClass}>
      <h2 id="block-heading" className="mb-2 text-lg font-semibold">
        Book seats for a workshop
      </h2>
      <form
        className="grid gap-3 sm:grid-cols-[repeat(3,max-content)]"
        onSubmit={(e) => {
          e.preventDefault();
          block.mutate({
            fleetId,
            label,
            startsAt: new Date(start),
            minutes: Math.round(hours * 60),
            emails: emails
              .split(/[\s,;]+/)
              .map((s) => s.trim())
              .filter(Boolean),
          });
        }}
      >
        <div>
          <label htmlFor="block-label" className="mb-1 block text-sm">
            Workshop name
          </label>
          <input
            id="block-label"
            className={inputClass}
            value={label}
            onChange={(e) => setLabel(e.target.value)}
            required
          />
        </div>
        <div>
          <label htmlFor="block-start" className="mb-1 block text-sm">
            Start
          </label>
          <input
            id="block-start"
            type="datetime-local"
            className={inputClass}
            value={start}
            onChange={(e) => setStart(e.target.value)}
            required
          />
        </div>
        <div>
          <label htmlFor="block-hours" className="mb-1 block text-sm">
            Hours
          </label>
          <input
            id="block-hours"
            type="number"
            min={0.25}
            step={0.25}
            className={`${inputClass} w-24`}
            value={hours}
            onChange={(e) => setHours(Number(e.target.value))}
          />
        </div>
        <div className="sm:col-span-3">
          <label htmlFor="block-emails" className="mb-1 block text-sm">
            Researchers' emails (one seat each)
          </label>
          <textarea
            id="block-emails"
            rows={3}
            className={`${inputClass} w-full max-w-xl`}
            value={emails}
            onChange={(e) => setEmails(e.target.value)}
            required
          />
        </div>
        <div>
          <button type="submit" className={primaryClass} disabled={block.isPending}>
            Book seats
          </button>
        </div>
      </form>
      <ErrorMessage error={block.error} />
      {block.isSuccess && (
        <p role="status" className="mt-2 text-sm text-emerald-800 dark:text-emerald-300">
          Booked {block.data.length} seat{block.data.length === 1 ? "" : "s"}.
        </p>
      )}
    </section>
  );
}

/** Days × hours: booked seats against the fleet's bookable seats. */
function Calendar({
  from,
  seats,
  hours,
}: {
  from: Date;
  seats: number;
  hours: { at: Date; booked: number }[];
}) {
  const days = Array.from({ length: DAYS }, (_, i) => {
    const d = new Date(from);
    d.setDate(d.getDate() + i);
    return d;
  });
  const cell = (day: Date, h: number) => {
    const at = new Date(day);
    at.setHours(h);
    return hours.find((x) => new Date(x.at).getTime() === at.getTime())?.booked ?? 0;
  };
  const shade = (n: number) =>
    n === 0
      ? "bg-slate-50 text-slate-400 dark:bg-slate-900 dark:text-slate-500"
      : n >= seats
        ? "bg-red-200 text-red-950 dark:bg-red-900 dark:text-red-50"
        : "bg-indigo-100 text-indigo-950 dark:bg-indigo-900 dark:text-indigo-50";
  return (
    <section aria-labelledby="calendar-heading" className={panelClass}>
      <h2 id="calendar-heading" className="mb-2 text-lg font-semibold">
        Calendar: booked seats of {seats} per hour
      </h2>
      <div className="overflow-x-auto">
        <table className="border-collapse text-xs" data-testid="booking-calendar">
          <caption className="sr-only">Booked seats per hour for the next {DAYS} days</caption>
          <thead>
            <tr>
              <th scope="col" className="px-1 text-left font-medium">
                Day
              </th>
              {Array.from({ length: 24 }, (_, h) => (
                // biome-ignore lint/suspicious/noArrayIndexKey: the hour is the key
                <th key={h} scope="col" className="w-7 px-0.5 text-center font-normal">
                  {String(h).padStart(2, "0")}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {days.map((d) => (
              <tr key={d.toISOString()}>
                <th scope="row" className="whitespace-nowrap px-1 text-left font-medium">
                  {d.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" })}
                </th>
                {Array.from({ length: 24 }, (_, h) => {
                  const n = cell(d, h);
                  return (
                    <td
                      // biome-ignore lint/suspicious/noArrayIndexKey: the hour is the key
                      key={h}
                      title={`${n} of ${seats} booked`}
                      className={`h-6 border border-white text-center dark:border-slate-950 ${shade(n)}`}
                    >
                      {n > 0 ? `${n}/${seats}` : ""}
                    </td>
                  );
                })}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

type Row = {
  id: string;
  seat: number;
  startsAt: Date;
  endsAt: Date;
  status: string;
  label: string | null;
  email: string | null;
  name: string | null;
};

function BookingList({ bookings }: { bookings: Row[] }) {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const cancel = useMutation(
    trpc.booking.cancelAny.mutationOptions({ onSuccess: () => queryClient.invalidateQueries() }),
  );
  return (
    <section aria-labelledby="list-heading" className={panelClass}>
      <h2 id="list-heading" className="mb-2 text-lg font-semibold">
        Bookings this week
      </h2>
      {bookings.length === 0 ? (
        <Empty>No bookings in the next {DAYS} days.</Empty>
      ) : (
        <table className="w-full text-left text-sm" data-testid="admin-bookings">
          <thead>
            <tr className="border-b border-slate-200 dark:border-slate-800">
              <th className="py-1 pr-3 font-medium">Researcher</th>
              <th className="py-1 pr-3 font-medium">When</th>
              <th className="py-1 pr-3 font-medium">Seat</th>
              <th className="py-1 pr-3 font-medium">Workshop</th>
              <th className="py-1 pr-3 font-medium">Status</th>
              <th className="py-1 font-medium">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {bookings.map((b) => (
              <tr key={b.id} className="border-b border-slate-100 dark:border-slate-800">
                <td className="py-1 pr-3">{b.name ?? b.email}</td>
                <td className="py-1 pr-3">
                  {fmt(b.startsAt)} – {fmtTime(b.endsAt)}
                </td>
                <td className="py-1 pr-3">{b.seat}</td>
                <td className="py-1 pr-3">{b.label ?? "—"}</td>
                <td className="py-1 pr-3">{b.status.replace("_", "-")}</td>
                <td className="py-1 text-right">
                  {b.status === "booked" && (
                    <ConfirmButton
                      label="Cancel"
                      accessibleLabel={`Cancel the booking of ${b.name ?? b.email} at ${fmt(b.startsAt)}`}
                      question="Cancel this booking?"
                      confirmLabel="Yes, cancel"
                      danger
                      pending={cancel.isPending}
                      onConfirm={() => cancel.mutate({ bookingId: b.id })}
                    />
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <ErrorMessage error={cancel.error} />
    </section>
  );
}
