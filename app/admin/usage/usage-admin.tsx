"use client";

import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useTRPC } from "@/app/providers";
import { buttonClass, Empty, ErrorMessage, FilterSelect, Loading, panelClass } from "../ui";
import { useUrlFilters } from "../use-url-filters";

const PERIODS = [
  { value: "7", label: "Last 7 days" },
  { value: "90", label: "Last 90 days" },
  { value: "365", label: "Last 365 days" },
] as const;

const hours = (h: number) => h.toLocaleString([], { maximumFractionDigits: 1 });

/** A CSV cell: quoted when it holds a comma, quote or line break; no formula injection. */
function cell(v: string | number | boolean | null): string {
  let s = v === null ? "" : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/**
 * Who used how much: hours and GPU-hours held per researcher and per fleet over a period, from
 * the audit log (usage.report), with a CSV download for the lab's accounting.
 */
export function UsageAdmin() {
  const trpc = useTRPC();
  const [f, setF] = useUrlFilters(["days"] as const);
  const days = Number(f.days) || 30;
  const report = useQuery({
    ...trpc.usage.report.queryOptions({ days }),
    placeholderData: keepPreviousData,
  });
  const data = report.data;

  const download = () => {
    if (!data) return;
    const rows = [
      ["researcher", "email", "holds", "hours", "gpu_hours", "holding_now"],
      ...data.users.map((u) => [u.name, u.email, u.holds, u.hours, u.gpuHours, u.holdingNow]),
    ];
    const csv = `${rows.map((r) => r.map(cell).join(",")).join("\r\n")}\r\n`;
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
    a.download = `lablink-usage-${days}d-${data.to.toISOString().slice(0, 10)}.csv`;
    a.click();
    URL.revokeObjectURL(a.href);
  };

  return (
    <div className="space-y-4">
      <h1 className="text-2xl font-semibold">Usage</h1>
      <div className="flex flex-wrap items-end gap-3">
        <FilterSelect
          id="usage-period"
          label="Period"
          value={f.days === "30" ? "" : f.days}
          onChange={(v) => setF({ days: v })}
          anyLabel="Last 30 days"
          options={PERIODS}
        />
        <button type="button" className={buttonClass} onClick={download} disabled={!data}>
          Download CSV
        </button>
      </div>
      {report.isPending && <Loading what="usage" />}
      <ErrorMessage error={report.error} />
      {data && (
        <>
          <p className="text-sm" data-testid="usage-total">
            {data.total.holds} {data.total.holds === 1 ? "hold" : "holds"},{" "}
            {hours(data.total.hours)} hours, {hours(data.total.gpuHours)} GPU-hours from{" "}
            {data.from.toLocaleDateString()} to {data.to.toLocaleDateString()}.
          </p>
          <section aria-labelledby="usage-people" className={panelClass}>
            <h2 id="usage-people" className="mb-2 font-semibold">
              By researcher
            </h2>
            {data.users.length === 0 ? (
              <Empty>No VM was held in this period.</Empty>
            ) : (
              <table className="w-full text-left text-sm">
                <thead>
                  <tr>
                    <th scope="col">Researcher</th>
                    <th scope="col">Holds</th>
                    <th scope="col">Hours</th>
                    <th scope="col">GPU-hours</th>
                    <th scope="col">Holding now</th>
                  </tr>
                </thead>
                <tbody>
                  {data.users.map((u) => (
                    <tr key={u.userId} data-testid="usage-user">
                      <td>
                        {u.name ?? "(deleted user)"}
                        {u.email && (
                          <span className="block text-slate-600 dark:text-slate-400">
                            {u.email}
                          </span>
                        )}
                      </td>
                      <td>{u.holds}</td>
                      <td>{hours(u.hours)}</td>
                      <td>{hours(u.gpuHours)}</td>
                      <td>{u.holdingNow ? "yes" : "no"}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </section>
          <section aria-labelledby="usage-fleets" className={panelClass}>
            <h2 id="usage-fleets" className="mb-2 font-semibold">
              By fleet
            </h2>
            {data.fleets.length === 0 ? (
              <Empty>No VM was held in this period.</Empty>
            ) : (
              <table className="w-full text-left text-sm">
                <thead>
                  <tr>
                    <th scope="col">Fleet</th>
                    <th scope="col">Holds</th>
                    <th scope="col">Hours</th>
                    <th scope="col">GPU-hours</th>
                  </tr>
                </thead>
                <tbody>
                  {data.fleets.map((fl) => (
                    <tr key={fl.fleetId ?? "none"} data-testid="usage-fleet">
                      <td>{fl.fleet ?? "(deleted VMs)"}</td>
                      <td>{fl.holds}</td>
                      <td>{hours(fl.hours)}</td>
                      <td>{hours(fl.gpuHours)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </section>
        </>
      )}
    </div>
  );
}
