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
          <UsageTable
            id="usage-people"
            title="By researcher"
            columns={["Researcher", "Holds", "Hours", "GPU-hours", "Holding now"]}
            rows={data.users.map((u) => ({
              key: u.userId,
              testId: "usage-user",
              cells: [
                <>
                  {u.name ?? "(deleted user)"}
                  {u.email && (
                    <span className="block text-slate-600 dark:text-slate-400">{u.email}</span>
                  )}
                </>,
                u.holds,
                hours(u.hours),
                hours(u.gpuHours),
                u.holdingNow ? "yes" : "no",
              ],
            }))}
          />
          <UsageTable
            id="usage-fleets"
            title="By fleet"
            columns={["Fleet", "Holds", "Hours", "GPU-hours"]}
            rows={data.fleets.map((fl) => ({
              key: fl.fleetId ?? "none",
              testId: "usage-fleet",
              cells: [fl.fleet ?? "(deleted VMs)", fl.holds, hours(fl.hours), hours(fl.gpuHours)],
            }))}
          />
        </>
      )}
    </div>
  );
}

/** One of the page's two tables, or a note that nothing was held. */
function UsageTable(props: {
  id: string;
  title: string;
  columns: string[];
  rows: { key: string; testId: string; cells: React.ReactNode[] }[];
}) {
  return (
    <section aria-labelledby={props.id} className={panelClass}>
      <h2 id={props.id} className="mb-2 font-semibold">
        {props.title}
      </h2>
      {props.rows.length === 0 ? (
        <Empty>No VM was held in this period.</Empty>
      ) : (
        <table className="w-full text-left text-sm">
          <thead>
            <tr>
              {props.columns.map((c) => (
                <th key={c} scope="col">
                  {c}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {props.rows.map((r) => (
              <tr key={r.key} data-testid={r.testId}>
                {r.cells.map((c, i) => (
                  // biome-ignore lint/suspicious/noArrayIndexKey: a row's cells are fixed columns
                  <td key={i}>{c}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
