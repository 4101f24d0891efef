"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import Link from "next/link";
import { useState } from "react";
import { useTRPC } from "@/app/providers";

const when = (at: Date | string) =>
  new Date(at).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });

/** `YYYY-MM-DDTHH:MM` in the browser's time zone, what a datetime-local input holds. */
function localInputValue(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

const FIELDS: Record<string, string> = { size: "Size", at: "Time" };

/** The server's first field message, named for the person ("Time: Invalid input..."). */
function fieldMessage(errors: unknown): string | undefined {
  const e = (errors as { path: string; message: string }[] | undefined)?.[0];
  return e ? `${FIELDS[e.path] ?? e.path}: ${e.message}` : undefined;
}

/**
 * A fleet's scheduled sizes (a workshop's start and end): the pending ones with a Cancel button,
 * the last few finished ones with how they went, and a form for a new one. The worker scales
 * the fleet when each is due (docs/operations.md, "Scheduled sizes").
 */
export function FleetSchedules(props: {
  fleet: { id: string; name: string; desiredSize: number };
}) {
  const { fleet } = props;
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const list = useQuery({
    ...trpc.fleet.schedules.queryOptions({ fleetId: fleet.id }),
    refetchInterval: 5_000,
  });
  const refresh = () => queryClient.invalidateQueries();
  const create = useMutation(trpc.fleet.scheduleScale.mutationOptions({ onSuccess: refresh }));
  const cancel = useMutation(trpc.fleet.cancelSchedule.mutationOptions({ onSuccess: refresh }));
  const destroyAt = useMutation(trpc.fleet.scheduleDestroy.mutationOptions({ onSuccess: refresh }));
  const [size, setSize] = useState(String(fleet.desiredSize));
  const [at, setAt] = useState(() => localInputValue(new Date(Date.now() + 60 * 60_000)));
  const pending = list.data?.filter((s) => s.status === "pending").length ?? 0;
  const id = `schedule-${fleet.id}`;
  return (
    <details className="text-sm">
      <summary className="cursor-pointer">
        Scheduled sizes{pending > 0 ? ` (${pending} pending)` : ""}
      </summary>
      <div className="mt-2 space-y-2">
        {list.data && list.data.length > 0 ? (
          <ul className="space-y-1" aria-label={`Scheduled sizes of ${fleet.name}`}>
            {list.data.map((s) => (
              <li key={s.id} data-testid="schedule" className="flex flex-wrap items-center gap-2">
                <span>
                  {when(s.at)} →{" "}
                  {s.kind === "destroy"
                    ? "destroy the fleet"
                    : `${s.size} ${s.size === 1 ? "VM" : "VMs"}`}
                  : <span data-testid="schedule-status">{s.status}</span>
                  {s.note && (
                    <span className="text-slate-600 dark:text-slate-400"> ({s.note})</span>
                  )}
                </span>
                {s.operationId && (
                  <Link href={`/admin/operations/${s.operationId}`} className="underline">
                    operation
                  </Link>
                )}
                {s.status === "pending" && (
                  <button
                    type="button"
                    onClick={() => cancel.mutate({ scheduleId: s.id })}
                    disabled={cancel.isPending}
                    className="rounded border px-2 py-0.5"
                  >
                    Cancel the change at {when(s.at)}
                  </button>
                )}
              </li>
            ))}
          </ul>
        ) : (
          <p className="text-slate-600 dark:text-slate-400">No scheduled changes.</p>
        )}
        <form
          className="flex flex-wrap items-end gap-2"
          onSubmit={(e) => {
            e.preventDefault();
            create.mutate({ fleetId: fleet.id, size: Number(size), at: new Date(at || NaN) });
          }}
        >
          <div>
            <label htmlFor={`${id}-size`} className="mb-1 block">
              Scale {fleet.name} to (VMs)
            </label>
            <input
              id={`${id}-size`}
              type="number"
              min={0}
              max={200}
              value={size}
              onChange={(e) => setSize(e.target.value)}
              className="w-20 rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-950"
            />
          </div>
          <div>
            <label htmlFor={`${id}-at`} className="mb-1 block">
              At (your time)
            </label>
            <input
              id={`${id}-at`}
              type="datetime-local"
              step={1}
              value={at}
              onChange={(e) => setAt(e.target.value)}
              className="rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-950"
            />
          </div>
          <button type="submit" disabled={create.isPending} className="rounded border px-2 py-1">
            Schedule
          </button>
          <button
            type="button"
            disabled={destroyAt.isPending}
            onClick={() => destroyAt.mutate({ fleetId: fleet.id, at: new Date(at || NaN) })}
            className="rounded border border-red-700 px-2 py-1 text-red-700 dark:border-red-400 dark:text-red-300"
          >
            Schedule destruction of {fleet.name}
          </button>
          {(create.error || cancel.error || destroyAt.error) && (
            <p role="alert" className="w-full text-red-700 dark:text-red-300">
              {fieldMessage(create.error?.data?.fieldErrors) ??
                (create.error ?? cancel.error ?? destroyAt.error)?.message}
            </p>
          )}
        </form>
      </div>
    </details>
  );
}
