"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useTRPC } from "@/app/providers";

const when = (at: Date | string) =>
  new Date(at).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });

const DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"] as const;

/**
 * A fleet's recurring slots (weekly workshop hours): each with its next change, a Delete button,
 * and a form for a new one. Days and times are in the chosen time zone (docs/operations.md).
 */
export function FleetRecurring(props: { fleet: { id: string; name: string } }) {
  const { fleet } = props;
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const list = useQuery(trpc.fleet.recurringSchedules.queryOptions({ fleetId: fleet.id }));
  const refresh = () => queryClient.invalidateQueries();
  const add = useMutation(trpc.fleet.addRecurringSchedule.mutationOptions({ onSuccess: refresh }));
  const remove = useMutation(
    trpc.fleet.deleteRecurringSchedule.mutationOptions({ onSuccess: refresh }),
  );
  const [days, setDays] = useState<string[]>(["TU", "TH"]);
  const [start, setStart] = useState("09:00");
  const [end, setEnd] = useState("17:00");
  const [tz, setTz] = useState(() => Intl.DateTimeFormat().resolvedOptions().timeZone);
  const [size, setSize] = useState("8");
  const [fallback, setFallback] = useState("0");
  const id = `rec-${fleet.id}`;
  const fieldError = (
    add.error?.data?.fieldErrors as { path: string; message: string }[] | undefined
  )?.[0];
  const input = "rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-950";
  return (
    <details className="text-sm">
      <summary className="cursor-pointer">
        Recurring slots{list.data?.length ? ` (${list.data.length})` : ""}
      </summary>
      <div className="mt-2 space-y-2">
        <ul className="space-y-1" aria-label={`Recurring slots of ${fleet.name}`}>
          {list.data?.map((r) => (
            <li key={r.id} data-testid="recurring" className="flex flex-wrap items-center gap-2">
              <span>
                {r.rrule} {r.startTime}–{r.endTime} {r.timezone}: {r.size}, then {r.fallbackSize}
                {" · next: "}
                {r.next ? `${when(r.next.at)} → ${r.next.size}` : "none"}
              </span>
              <button
                type="button"
                onClick={() => remove.mutate({ scheduleId: r.id })}
                className="rounded border px-2 py-0.5"
              >
                Delete slot {r.rrule}
              </button>
            </li>
          ))}
        </ul>
        <form
          className="flex flex-wrap items-end gap-2"
          onSubmit={(e) => {
            e.preventDefault();
            add.mutate({
              fleetId: fleet.id,
              rrule: `FREQ=WEEKLY;BYDAY=${days.join(",")}`,
              timezone: tz,
              startTime: start,
              endTime: end,
              size: Number(size),
              fallbackSize: Number(fallback),
            });
          }}
        >
          <fieldset className="flex gap-1">
            <legend className="mb-1">Every</legend>
            {DAYS.map((d) => (
              <label key={d} className="flex items-center gap-0.5">
                <input
                  type="checkbox"
                  checked={days.includes(d)}
                  onChange={(e) =>
                    setDays(e.target.checked ? [...days, d] : days.filter((x) => x !== d))
                  }
                />
                {d}
              </label>
            ))}
          </fieldset>
          <div>
            <label htmlFor={`${id}-start`} className="mb-1 block">
              From
            </label>
            <input
              id={`${id}-start`}
              type="time"
              value={start}
              onChange={(e) => setStart(e.target.value)}
              className={input}
            />
          </div>
          <div>
            <label htmlFor={`${id}-end`} className="mb-1 block">
              To
            </label>
            <input
              id={`${id}-end`}
              type="time"
              value={end}
              onChange={(e) => setEnd(e.target.value)}
              className={input}
            />
          </div>
          <div>
            <label htmlFor={`${id}-tz`} className="mb-1 block">
              Time zone
            </label>
            <input
              id={`${id}-tz`}
              value={tz}
              onChange={(e) => setTz(e.target.value)}
              className={`w-40 ${input}`}
            />
          </div>
          <div>
            <label htmlFor={`${id}-size`} className="mb-1 block">
              VMs during it (ready ones with a warm pool)
            </label>
            <input
              id={`${id}-size`}
              type="number"
              min={0}
              max={200}
              value={size}
              onChange={(e) => setSize(e.target.value)}
              className={`w-20 ${input}`}
            />
          </div>
          <div>
            <label htmlFor={`${id}-fallback`} className="mb-1 block">
              VMs after it
            </label>
            <input
              id={`${id}-fallback`}
              type="number"
              min={0}
              max={200}
              value={fallback}
              onChange={(e) => setFallback(e.target.value)}
              className={`w-20 ${input}`}
            />
          </div>
          <button type="submit" disabled={add.isPending} className="rounded border px-2 py-1">
            Add slot
          </button>
          {(add.error || remove.error) && (
            <p role="alert" className="w-full text-red-700 dark:text-red-300">
              {fieldError
                ? `${fieldError.path}: ${fieldError.message}`
                : (add.error ?? remove.error)?.message}
            </p>
          )}
        </form>
      </div>
    </details>
  );
}
