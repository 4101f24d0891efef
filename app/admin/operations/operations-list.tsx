"use client";

import { keepPreviousData, useQuery } from "@tanstack/react-query";
import Link from "next/link";
import { useTRPC } from "@/app/providers";
import {
  buttonClass,
  CursorPager,
  Empty,
  ErrorMessage,
  FilterSelect,
  Loading,
  linkClass,
  StatusBadge,
  useCursorPages,
  When,
} from "../ui";
import { useUrlFilters } from "../use-url-filters";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"] as const;
const KINDS = [
  "fleet.create",
  "fleet.scale",
  "fleet.destroy",
  "vm.reboot",
  "vm.terminate",
  "vm.replace",
] as const;
const PAGE = 25;

export function OperationsList() {
  const trpc = useTRPC();
  const [f, setF] = useUrlFilters(["fleet", "status", "kind"] as const);
  const pages = useCursorPages<string>();
  const cursor = pages.cursor;
  // Always refetched on arrival: the dashboard's cached list may predate a fleet made since.
  const fleets = useQuery({ ...trpc.fleet.list.queryOptions(), refetchOnMount: "always" });
  const ops = useQuery({
    ...trpc.operation.list.queryOptions({
      limit: PAGE,
      fleetId: f.fleet || undefined,
      status: STATUSES.includes(f.status as never)
        ? [f.status as (typeof STATUSES)[number]]
        : undefined,
      kind: KINDS.includes(f.kind as never) ? [f.kind as (typeof KINDS)[number]] : undefined,
      cursor,
    }),
    placeholderData: keepPreviousData,
    // Running operations move on their own; a slow poll keeps the list honest.
    refetchInterval: 5_000,
  });
  const filter = (next: Partial<typeof f>) => {
    pages.reset();
    setF(next);
  };
  const filtered = Boolean(f.fleet || f.status || f.kind);

  return (
    <div className="space-y-4">
      <h1 className="text-2xl font-semibold">Operations</h1>
      <p className="text-sm text-slate-600 dark:text-slate-400">
        Every provisioning request (creating, scaling and destroying fleets, rebooting and
        terminating VMs), newest first.
      </p>
      <form
        aria-label="Filter operations"
        className="flex flex-wrap items-end gap-3"
        onSubmit={(e) => e.preventDefault()}
      >
        <FilterSelect
          id="ops-fleet"
          label="Fleet"
          anyLabel="All fleets"
          value={f.fleet}
          onChange={(fleet) => filter({ fleet })}
          options={fleets.data?.map((fl) => ({ value: fl.id, label: fl.name })) ?? []}
        />
        <FilterSelect
          id="ops-status"
          label="Status"
          anyLabel="Any status"
          value={f.status}
          onChange={(status) => filter({ status })}
          options={STATUSES}
        />
        <FilterSelect
          id="ops-kind"
          label="Kind"
          anyLabel="Any kind"
          value={f.kind}
          onChange={(kind) => filter({ kind })}
          options={KINDS}
        />
        {filtered && (
          <button
            type="button"
            className={buttonClass}
            onClick={() => filter({ fleet: "", status: "", kind: "" })}
          >
            Clear filters
          </button>
        )}
      </form>

      {ops.isPending && <Loading what="operations" />}
      <ErrorMessage error={ops.error} prefix="Could not load operations" />
      {ops.data && ops.data.rows.length === 0 && (
        <Empty>
          {filtered
            ? "No operations match these filters."
            : "No operations yet. Creating or scaling a fleet starts one."}
        </Empty>
      )}
      {ops.data && ops.data.rows.length > 0 && (
        <div className="overflow-x-auto rounded-lg border border-slate-200 dark:border-slate-800">
          <table className="w-full min-w-[44rem] text-left text-sm" aria-busy={ops.isFetching}>
            <caption className="sr-only">Operations, newest first</caption>
            <thead className="bg-slate-100 text-xs uppercase text-slate-700 dark:bg-slate-900 dark:text-slate-300">
              <tr>
                <th scope="col" className="px-3 py-2">
                  Operation
                </th>
                <th scope="col" className="px-3 py-2">
                  Fleet
                </th>
                <th scope="col" className="px-3 py-2">
                  Status
                </th>
                <th scope="col" className="px-3 py-2">
                  Requested
                </th>
                <th scope="col" className="px-3 py-2">
                  Finished
                </th>
                <th scope="col" className="px-3 py-2">
                  By
                </th>
              </tr>
            </thead>
            <tbody className="divide-y divide-slate-200 bg-white dark:divide-slate-800 dark:bg-slate-950">
              {ops.data.rows.map((o) => (
                <tr key={o.id} data-testid="operation-row">
                  <td className="px-3 py-2">
                    <Link href={`/admin/operations/${o.id}`} className={`font-mono ${linkClass}`}>
                      {o.kind}
                    </Link>
                  </td>
                  <td className="px-3 py-2">{o.fleetName}</td>
                  <td className="px-3 py-2">
                    <StatusBadge status={o.status} />
                  </td>
                  <td className="px-3 py-2">
                    <When at={o.createdAt} />
                  </td>
                  <td className="px-3 py-2">
                    <When at={o.finishedAt} />
                  </td>
                  <td className="px-3 py-2">
                    {o.requestedByEmail ?? o.requestedByName ?? "system"}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <CursorPager newer={pages.newer} older={pages.older(ops.data?.nextCursor)} />
    </div>
  );
}
