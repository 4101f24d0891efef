"use client";

import { keepPreviousData, useQuery } from "@tanstack/react-query";
import Link from "next/link";
import { useState } from "react";
import type { VmState } from "@/server/db/schema";
import { useTRPC } from "../providers";
import { age, HealthBadge, StateBadge } from "./badges";

const STATES: VmState[] = [
  "provisioning",
  "booting",
  "ready",
  "claimed",
  "releasing",
  "draining",
  "rebooting",
  "terminating",
  "failed",
  "terminated",
];
const PAGE = 50;
type Sort = "name" | "state" | "lastHeartbeat" | "stateChanged";

function SortHeader(props: {
  label: string;
  col: Sort;
  sort: Sort;
  order: "asc" | "desc";
  onSort: (col: Sort) => void;
}) {
  const active = props.sort === props.col;
  return (
    <th
      scope="col"
      className="px-3 py-2"
      aria-sort={active ? (props.order === "asc" ? "ascending" : "descending") : "none"}
    >
      <button
        type="button"
        onClick={() => props.onSort(props.col)}
        className="font-semibold hover:underline"
      >
        {props.label}
        <span aria-hidden="true">{active ? (props.order === "asc" ? " ▲" : " ▼") : ""}</span>
      </button>
    </th>
  );
}

export function FleetDashboard() {
  const trpc = useTRPC();
  const [state, setState] = useState<VmState | "">("");
  const [fleetId, setFleetId] = useState("");
  const [health, setHealth] = useState<"" | "healthy" | "unhealthy">("");
  const [held, setHeld] = useState<"" | "held" | "idle" | "free">("");
  const [search, setSearch] = useState("");
  const [sort, setSort] = useState<Sort>("name");
  const [order, setOrder] = useState<"asc" | "desc">("asc");
  const [offset, setOffset] = useState(0);
  const fleets = useQuery({ ...trpc.fleet.list.queryOptions(), refetchInterval: 5_000 });
  const list = useQuery({
    ...trpc.vm.list.queryOptions({
      states: state ? [state] : undefined,
      fleetId: fleetId || undefined,
      healthy: health === "" ? undefined : health === "healthy",
      held: held === "" ? undefined : held !== "free",
      // Held VMs nobody uses: candidates to reclaim.
      idle: held === "idle" ? true : undefined,
      search: search || undefined,
      sort,
      order,
      limit: PAGE,
      offset,
    }),
    refetchInterval: 3_000,
    placeholderData: keepPreviousData,
  });

  const totals: Partial<Record<VmState, number>> = {};
  for (const f of fleets.data ?? []) {
    for (const [s, n] of Object.entries(f.vmCounts))
      totals[s as VmState] = (totals[s as VmState] ?? 0) + (n ?? 0);
  }
  const reset = () => setOffset(0);
  const onSort = (col: Sort) => {
    if (col === sort) setOrder(order === "asc" ? "desc" : "asc");
    else {
      setSort(col);
      setOrder("asc");
    }
    reset();
  };
  const selectClass =
    "rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-900";

  return (
    <div className="space-y-6">
      <h1 className="text-2xl font-semibold">Fleet dashboard</h1>

      <section
        aria-label="VMs by state"
        className="flex flex-wrap gap-2"
        data-testid="state-counts"
      >
        {(
          [
            "ready",
            "claimed",
            "booting",
            "provisioning",
            "releasing",
            "draining",
            "rebooting",
            "failed",
          ] as const
        ).map((s) => (
          <button
            key={s}
            type="button"
            onClick={() => {
              setState(state === s ? "" : s);
              reset();
            }}
            aria-pressed={state === s}
            className="rounded-lg border border-slate-200 bg-white px-3 py-2 text-left text-sm hover:border-indigo-400 aria-pressed:border-indigo-600 aria-pressed:ring-1 aria-pressed:ring-indigo-600 dark:border-slate-800 dark:bg-slate-900"
          >
            <span className="block text-xl font-semibold tabular-nums">{totals[s] ?? 0}</span>
            <span className="text-slate-600 dark:text-slate-400">{s}</span>
          </button>
        ))}
      </section>

      {fleets.isError && (
        <p role="alert" className="text-sm text-red-700 dark:text-red-300">
          Could not load fleets: {fleets.error.message}
        </p>
      )}
      <section aria-label="Fleets" className="grid gap-3 sm:grid-cols-2 lg:grid-cols-3">
        {fleets.data?.length === 0 && <p className="text-sm text-slate-500">No fleets yet.</p>}
        {fleets.data?.map((f) => (
          <div
            key={f.id}
            className="rounded-lg border border-slate-200 bg-white p-4 text-sm dark:border-slate-800 dark:bg-slate-900"
          >
            <p className="font-medium">
              {f.name}{" "}
              <span className="text-slate-500">
                ({f.driver}, {f.status})
              </span>
            </p>
            <p className="text-slate-600 dark:text-slate-400">
              {f.gpuCount} × {f.gpuModel ?? "GPU"} · {f.instanceType} · desired {f.desiredSize}
            </p>
            <p className="mt-1">
              {Object.entries(f.vmCounts)
                .map(([s, n]) => `${n} ${s}`)
                .join(" · ") || "no VMs"}
            </p>
          </div>
        ))}
      </section>

      <section aria-labelledby="vms-heading" className="space-y-3">
        <h2 id="vms-heading" className="text-lg font-semibold">
          VMs
        </h2>
        <div className="flex flex-wrap gap-3 text-sm">
          <div className="flex items-center gap-2">
            <label htmlFor="filter-state">State</label>
            <select
              id="filter-state"
              value={state}
              onChange={(e) => {
                setState(e.target.value as VmState | "");
                reset();
              }}
              className={selectClass}
            >
              <option value="">all live</option>
              {STATES.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          </div>
          <div className="flex items-center gap-2">
            <label htmlFor="filter-fleet">Fleet</label>
            <select
              id="filter-fleet"
              value={fleetId}
              onChange={(e) => {
                setFleetId(e.target.value);
                reset();
              }}
              className={selectClass}
            >
              <option value="">all fleets</option>
              {fleets.data?.map((f) => (
                <option key={f.id} value={f.id}>
                  {f.name}
                </option>
              ))}
            </select>
          </div>
          <div className="flex items-center gap-2">
            <label htmlFor="filter-health">Health</label>
            <select
              id="filter-health"
              value={health}
              onChange={(e) => {
                setHealth(e.target.value as typeof health);
                reset();
              }}
              className={selectClass}
            >
              <option value="">any</option>
              <option value="healthy">healthy</option>
              <option value="unhealthy">unhealthy</option>
            </select>
          </div>
          <div className="flex items-center gap-2">
            <label htmlFor="filter-holder">Holder</label>
            <select
              id="filter-holder"
              value={held}
              onChange={(e) => {
                setHeld(e.target.value as typeof held);
                reset();
              }}
              className={selectClass}
            >
              <option value="">any</option>
              <option value="held">held by a researcher</option>
              <option value="idle">held, but idle</option>
              <option value="free">no holder</option>
            </select>
          </div>
          <div className="flex items-center gap-2">
            <label htmlFor="filter-search">Search</label>
            <input
              id="filter-search"
              type="search"
              value={search}
              placeholder="VM name or researcher"
              onChange={(e) => {
                setSearch(e.target.value);
                reset();
              }}
              className={selectClass}
            />
          </div>
        </div>
        {list.isError && (
          <p role="alert" className="text-sm text-red-700 dark:text-red-300">
            {list.error.message}
          </p>
        )}
        <div className="overflow-x-auto rounded-lg border border-slate-200 bg-white dark:border-slate-800 dark:bg-slate-900">
          <table className="min-w-full text-left text-sm" data-testid="vm-table">
            <thead className="border-b border-slate-200 bg-slate-50 dark:border-slate-800 dark:bg-slate-800">
              <tr>
                <SortHeader label="Name" col="name" sort={sort} order={order} onSort={onSort} />
                <th scope="col" className="px-3 py-2">
                  Fleet
                </th>
                <SortHeader label="State" col="state" sort={sort} order={order} onSort={onSort} />
                <th scope="col" className="px-3 py-2">
                  Holder
                </th>
                <th scope="col" className="px-3 py-2">
                  GPU health
                </th>
                <SortHeader
                  label="Last heartbeat"
                  col="lastHeartbeat"
                  sort={sort}
                  order={order}
                  onSort={onSort}
                />
              </tr>
            </thead>
            <tbody>
              {list.isPending && (
                <tr>
                  <td colSpan={6} className="px-3 py-6 text-center text-slate-500">
                    Loading VMs…
                  </td>
                </tr>
              )}
              {list.data?.rows.map((vm) => (
                <tr
                  key={vm.id}
                  className="border-b border-slate-100 last:border-0 dark:border-slate-800"
                  data-testid="vm-row"
                >
                  <td className="px-3 py-2 font-mono">
                    <Link
                      href={`/admin/vms/${vm.id}`}
                      className="text-indigo-700 hover:underline dark:text-indigo-300"
                    >
                      {vm.name}
                    </Link>
                  </td>
                  <td className="px-3 py-2">{vm.fleet.name}</td>
                  <td className="px-3 py-2" data-testid="vm-row-state">
                    <StateBadge state={vm.state} />
                    {vm.startupIssue && (
                      <span
                        data-testid="vm-row-startup-issue"
                        title={vm.startupIssue}
                        className={`ml-1 text-xs ${vm.state === "failed" ? "text-red-700 dark:text-red-300" : "text-amber-800 dark:text-amber-300"}`}
                      >
                        {vm.state === "failed" ? "startup failed" : "startup warning"}
                      </span>
                    )}
                  </td>
                  <td className="px-3 py-2">
                    {vm.holder ? (vm.holder.name ?? vm.holder.email) : "—"}
                    {vm.holder && vm.idleSince && (
                      <span
                        data-testid="vm-row-idle"
                        className="ml-1 text-amber-800 dark:text-amber-300"
                      >
                        (idle {age(vm.idleSince).replace(/ ago$/, "")})
                      </span>
                    )}
                  </td>
                  <td className="px-3 py-2">
                    <HealthBadge healthy={vm.healthy} reasons={vm.healthReasons} gpus={vm.gpus} />
                  </td>
                  <td className="px-3 py-2 tabular-nums">{age(vm.lastHeartbeatAt)}</td>
                </tr>
              ))}
              {list.data?.rows.length === 0 && (
                <tr>
                  <td colSpan={6} className="px-3 py-6 text-center text-slate-500">
                    No VMs match.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
        {list.data && (
          <div className="flex items-center gap-3 text-sm">
            <span data-testid="vm-total">
              {list.data.total === 0 ? 0 : offset + 1}–{Math.min(offset + PAGE, list.data.total)} of{" "}
              {list.data.total}
            </span>
            <button
              type="button"
              disabled={offset === 0}
              onClick={() => setOffset(Math.max(0, offset - PAGE))}
              className="rounded border px-2 py-1 disabled:opacity-50"
            >
              Previous
            </button>
            <button
              type="button"
              disabled={offset + PAGE >= list.data.total}
              onClick={() => setOffset(offset + PAGE)}
              className="rounded border px-2 py-1 disabled:opacity-50"
            >
              Next
            </button>
          </div>
        )}
      </section>
    </div>
  );
}
