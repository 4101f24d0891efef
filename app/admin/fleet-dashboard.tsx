"use client";

import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useState } from "react";
import type { VmState } from "@/server/db/schema";
import { useTRPC } from "../providers";

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

function age(date: Date | string | null): string {
  if (!date) return "never";
  const s = Math.max(0, Math.round((Date.now() - new Date(date).getTime()) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

export function FleetDashboard() {
  const trpc = useTRPC();
  const [state, setState] = useState<VmState | "">("");
  const [search, setSearch] = useState("");
  const [offset, setOffset] = useState(0);
  const fleets = useQuery({ ...trpc.fleet.list.queryOptions(), refetchInterval: 5_000 });
  const list = useQuery({
    ...trpc.vm.list.queryOptions({
      states: state ? [state] : undefined,
      search: search || undefined,
      limit: PAGE,
      offset,
    }),
    refetchInterval: 3_000,
    placeholderData: keepPreviousData,
  });

  return (
    <div className="space-y-6">
      <h1 className="text-2xl font-semibold">Fleet dashboard</h1>
      <section aria-label="Fleets" className="grid gap-3 sm:grid-cols-2 lg:grid-cols-3">
        {fleets.data?.map((f) => (
          <div
            key={f.id}
            className="rounded-lg border border-slate-200 bg-white p-4 text-sm dark:border-slate-800 dark:bg-slate-900"
          >
            <p className="font-medium">
              {f.name} <span className="text-slate-500">({f.driver})</span>
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
          <label className="flex items-center gap-2">
            State
            <select
              value={state}
              onChange={(e) => {
                setState(e.target.value as VmState | "");
                setOffset(0);
              }}
              className="rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-900"
            >
              <option value="">all live</option>
              {STATES.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          </label>
          <label className="flex items-center gap-2">
            Search
            <input
              type="search"
              value={search}
              placeholder="VM name or researcher"
              onChange={(e) => {
                setSearch(e.target.value);
                setOffset(0);
              }}
              className="rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-900"
            />
          </label>
        </div>
        {list.isError && (
          <p role="alert" className="text-sm text-red-700">
            {list.error.message}
          </p>
        )}
        <div className="overflow-x-auto rounded-lg border border-slate-200 bg-white dark:border-slate-800 dark:bg-slate-900">
          <table className="min-w-full text-left text-sm" data-testid="vm-table">
            <thead className="border-b border-slate-200 bg-slate-50 dark:border-slate-800 dark:bg-slate-800">
              <tr>
                <th scope="col" className="px-3 py-2">
                  Name
                </th>
                <th scope="col" className="px-3 py-2">
                  Fleet
                </th>
                <th scope="col" className="px-3 py-2">
                  State
                </th>
                <th scope="col" className="px-3 py-2">
                  Holder
                </th>
                <th scope="col" className="px-3 py-2">
                  GPU health
                </th>
                <th scope="col" className="px-3 py-2">
                  Last heartbeat
                </th>
              </tr>
            </thead>
            <tbody>
              {list.data?.rows.map((vm) => (
                <tr
                  key={vm.id}
                  className="border-b border-slate-100 last:border-0 dark:border-slate-800"
                  data-testid="vm-row"
                >
                  <td className="px-3 py-2 font-mono">{vm.name}</td>
                  <td className="px-3 py-2">{vm.fleet.name}</td>
                  <td className="px-3 py-2" data-testid="vm-row-state">
                    {vm.state}
                  </td>
                  <td className="px-3 py-2">
                    {vm.holder ? (vm.holder.name ?? vm.holder.email) : "—"}
                  </td>
                  <td className="px-3 py-2">
                    {vm.healthy ? (
                      <span className="text-emerald-700 dark:text-emerald-400">
                        healthy{vm.gpus.length ? ` · ${vm.gpus.length} × ${vm.gpus[0]?.name}` : ""}
                      </span>
                    ) : (
                      <span
                        className="text-red-700 dark:text-red-300"
                        title={vm.healthReasons.join("\n")}
                      >
                        unhealthy{vm.healthReasons.length ? `: ${vm.healthReasons[0]}` : ""}
                      </span>
                    )}
                  </td>
                  <td className="px-3 py-2">{age(vm.lastHeartbeatAt)}</td>
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
