"use client";

import { useQuery } from "@tanstack/react-query";
import { useTRPC } from "../providers";
import { outlookText, poolMessage } from "./pool-text";

export function PoolSummary() {
  const trpc = useTRPC();
  const pool = useQuery({ ...trpc.pool.summary.queryOptions(), refetchInterval: 5_000 });
  if (pool.isPending) return <p className="text-sm text-slate-500">Loading availability…</p>;
  if (pool.isError)
    return (
      <p role="alert" className="text-sm text-red-700 dark:text-red-300">
        Could not load availability: {pool.error.message}
      </p>
    );
  const { fleets, totals } = pool.data;
  const message = poolMessage(pool.data);
  return (
    <section aria-labelledby="pool-heading" className="space-y-3">
      <h2 id="pool-heading" className="text-lg font-semibold">
        Availability
      </h2>
      <p data-testid="ready-count" className="text-sm">
        <strong>{totals.ready}</strong> ready · {totals.booting} starting · {totals.inUse} in use
      </p>
      {message && (
        <p
          data-testid="pool-message"
          className="rounded border border-amber-300 bg-amber-50 p-3 text-sm text-amber-950 dark:border-amber-800 dark:bg-amber-950 dark:text-amber-100"
        >
          {message}
        </p>
      )}
      {fleets.length > 0 && (
        <ul className="grid gap-3 sm:grid-cols-2 lg:grid-cols-3">
          {fleets.map((f) => {
            const why = outlookText(f.outlook);
            return (
              <li
                key={f.fleetId}
                data-testid="pool-fleet"
                className="rounded-lg border border-slate-200 bg-white p-4 dark:border-slate-800 dark:bg-slate-900"
              >
                <p className="font-medium">{f.name}</p>
                <p className="text-sm text-slate-600 dark:text-slate-400">
                  {f.gpuCount} × {f.gpuModel ?? "GPU"} · {f.instanceType}
                </p>
                {f.quota && (
                  <p data-testid="fleet-quota-used" className="text-sm">
                    Your GPU-hours, last 7 days: {f.quota.usedGpuHours} of {f.quota.gpuHoursPerWeek}
                    {f.quota.usedGpuHours >= f.quota.gpuHoursPerWeek && " (used up)"}
                  </p>
                )}
                <p className="mt-2 text-sm">
                  <span className="font-semibold text-emerald-700 dark:text-emerald-400">
                    {f.ready} ready
                  </span>{" "}
                  · {f.booting} starting · {f.inUse} in use
                  {f.unhealthy + f.draining > 0 && (
                    <> · {f.unhealthy + f.draining} out of service</>
                  )}
                </p>
                {why && (
                  <p
                    data-testid="fleet-outlook"
                    className="mt-2 text-sm text-slate-700 dark:text-slate-300"
                  >
                    {why}
                  </p>
                )}
              </li>
            );
          })}
        </ul>
      )}
    </section>
  );
}
