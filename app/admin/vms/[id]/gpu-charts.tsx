"use client";

import { useQuery } from "@tanstack/react-query";
import { useId, useState } from "react";
import {
  CartesianGrid,
  Legend,
  Line,
  LineChart,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from "recharts";
import { useTRPC } from "@/app/providers";
import type { GpuHistory } from "@/server/domain/gpu-history";

const RANGES = [1, 6, 24] as const;
type Range = (typeof RANGES)[number];

/** Line colours readable on white and on slate-900 (Tailwind 500s). */
const COLORS = [
  "#6366f1",
  "#10b981",
  "#f59e0b",
  "#f43f5e",
  "#0ea5e9",
  "#a855f7",
  "#84cc16",
  "#f97316",
];

type Metric = "utilizationPct" | "memoryUsedMiB" | "temperatureC";
const METRICS: { key: Metric; title: string; unit: string; domain?: [number, number] }[] = [
  { key: "utilizationPct", title: "Utilisation", unit: "%", domain: [0, 100] },
  { key: "memoryUsedMiB", title: "Memory used", unit: "MiB" },
  { key: "temperatureC", title: "Temperature", unit: "°C" },
];

const timeLabel = (t: number) =>
  new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

const round = (n: number) => (Math.abs(n) >= 100 ? Math.round(n) : Math.round(n * 10) / 10);

type Row = { t: number } & Record<string, number | null>;

/** One row per time bucket, one column per GPU: the shape recharts draws lines from. */
function rowsFor(history: GpuHistory, metric: Metric): Row[] {
  const byTime = new Map<number, Row>();
  for (const gpu of history.gpus) {
    for (const p of gpu.points) {
      const t = new Date(p.at).getTime();
      const row = byTime.get(t) ?? { t };
      row[`gpu${gpu.index}`] = p[metric];
      byTime.set(t, row);
    }
  }
  return [...byTime.values()].sort((a, b) => a.t - b.t);
}

function stats(values: (number | null)[]) {
  const xs = values.filter((v): v is number => v !== null && Number.isFinite(v));
  if (xs.length === 0) return null;
  return {
    min: Math.min(...xs),
    max: Math.max(...xs),
    avg: xs.reduce((a, b) => a + b, 0) / xs.length,
    latest: xs.at(-1) as number,
  };
}

function MetricChart({
  history,
  metric,
}: {
  history: GpuHistory;
  metric: (typeof METRICS)[number];
}) {
  const rows = rowsFor(history, metric.key);
  const captionId = useId();
  return (
    <figure
      aria-labelledby={captionId}
      className="rounded-lg border border-slate-200 bg-white p-3 dark:border-slate-800 dark:bg-slate-900"
    >
      <figcaption id={captionId} className="mb-2 text-sm font-medium">
        {metric.title} ({metric.unit})
      </figcaption>
      {/* The SVG is decoration for sighted users; the table below carries the same figures. */}
      <div className="h-48 text-slate-500 dark:text-slate-400" aria-hidden="true">
        <ResponsiveContainer width="100%" height="100%">
          <LineChart
            data={rows}
            margin={{ top: 4, right: 8, bottom: 0, left: 0 }}
            // Not focusable: the SVG is hidden from assistive technology, the table carries the data.
            accessibilityLayer={false}
          >
            <CartesianGrid stroke="currentColor" strokeOpacity={0.2} vertical={false} />
            <XAxis
              dataKey="t"
              type="number"
              scale="time"
              domain={[new Date(history.from).getTime(), new Date(history.to).getTime()]}
              tickFormatter={timeLabel}
              stroke="currentColor"
              tick={{ fill: "currentColor", fontSize: 11 }}
              minTickGap={24}
            />
            <YAxis
              domain={metric.domain ?? ["auto", "auto"]}
              stroke="currentColor"
              tick={{ fill: "currentColor", fontSize: 11 }}
              width={44}
            />
            <Tooltip
              labelFormatter={(t) => new Date(Number(t)).toLocaleString()}
              formatter={(v) => `${typeof v === "number" ? round(v) : v} ${metric.unit}`}
              contentStyle={{
                backgroundColor: "Canvas",
                color: "CanvasText",
                borderColor: "GrayText",
                fontSize: 12,
              }}
            />
            {history.gpus.length > 1 && <Legend wrapperStyle={{ fontSize: 12 }} />}
            {history.gpus.map((g, i) => (
              <Line
                key={g.index}
                dataKey={`gpu${g.index}`}
                name={`GPU ${g.index}`}
                stroke={COLORS[i % COLORS.length]}
                strokeWidth={2}
                dot={false}
                isAnimationActive={false}
                connectNulls={false}
              />
            ))}
          </LineChart>
        </ResponsiveContainer>
      </div>
    </figure>
  );
}

/** The figures behind the charts, for screen readers and anyone who prefers a table. */
function SummaryTable({ history }: { history: GpuHistory }) {
  return (
    <div className="overflow-x-auto">
      <table className="min-w-full text-left text-sm" data-testid="gpu-chart-summary">
        <caption className="sr-only">
          GPU readings over the last {history.hours} hour{history.hours > 1 ? "s" : ""}: latest,
          average, minimum and maximum per GPU
        </caption>
        <thead className="border-b border-slate-200 dark:border-slate-800">
          <tr>
            <th scope="col" className="px-2 py-1 font-medium">
              GPU
            </th>
            <th scope="col" className="px-2 py-1 font-medium">
              Reading
            </th>
            <th scope="col" className="px-2 py-1 font-medium">
              Latest
            </th>
            <th scope="col" className="px-2 py-1 font-medium">
              Average
            </th>
            <th scope="col" className="px-2 py-1 font-medium">
              Min
            </th>
            <th scope="col" className="px-2 py-1 font-medium">
              Max
            </th>
          </tr>
        </thead>
        <tbody>
          {history.gpus.flatMap((g) =>
            METRICS.map((m) => {
              const s = stats(g.points.map((p) => p[m.key]));
              const cell = (n: number | undefined) =>
                n === undefined ? "–" : `${round(n)} ${m.unit}`;
              return (
                <tr
                  key={`${g.index}-${m.key}`}
                  className="border-b border-slate-100 last:border-0 dark:border-slate-800"
                >
                  <th scope="row" className="px-2 py-1 font-normal">
                    GPU {g.index}
                  </th>
                  <td className="px-2 py-1">{m.title}</td>
                  <td className="px-2 py-1 tabular-nums">{cell(s?.latest)}</td>
                  <td className="px-2 py-1 tabular-nums">{cell(s?.avg)}</td>
                  <td className="px-2 py-1 tabular-nums">{cell(s?.min)}</td>
                  <td className="px-2 py-1 tabular-nums">{cell(s?.max)}</td>
                </tr>
              );
            }),
          )}
        </tbody>
      </table>
    </div>
  );
}

/** GPU utilisation, memory and temperature over the last 1, 6 or 24 hours (admin VM detail). */
export function GpuCharts({ vmId }: { vmId: string }) {
  const trpc = useTRPC();
  const [hours, setHours] = useState<Range>(1);
  const history = useQuery({
    ...trpc.vm.gpuHistory.queryOptions({ vmId, hours }),
    refetchInterval: 60_000,
    placeholderData: (prev) => prev,
  });
  const data = history.data;
  const samples = data?.gpus.reduce((n, g) => n + g.points.length, 0) ?? 0;

  return (
    <section aria-labelledby="gpu-charts-heading" className="space-y-3" data-testid="gpu-charts">
      <div className="flex flex-wrap items-center justify-between gap-3">
        <h2 id="gpu-charts-heading" className="text-lg font-semibold">
          GPU history
        </h2>
        <fieldset className="flex gap-1">
          <legend className="sr-only">Time range</legend>
          {RANGES.map((r) => (
            <button
              key={r}
              type="button"
              aria-pressed={hours === r}
              onClick={() => setHours(r)}
              className={`rounded border px-3 py-1 text-sm focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-indigo-600 ${
                hours === r
                  ? "border-indigo-700 bg-indigo-700 text-white dark:border-indigo-400 dark:bg-indigo-400 dark:text-slate-950"
                  : "border-slate-300 hover:bg-slate-100 dark:border-slate-700 dark:hover:bg-slate-800"
              }`}
            >
              <span aria-hidden="true">{r} h</span>
              <span className="sr-only">
                {r} hour{r > 1 ? "s" : ""}
              </span>
            </button>
          ))}
        </fieldset>
      </div>

      {history.isPending && <p className="text-sm text-slate-500">Loading GPU history…</p>}
      {history.isError && (
        <p role="alert" className="text-sm text-red-700 dark:text-red-300">
          {history.error.message}
        </p>
      )}
      {data && samples === 0 && (
        <p
          className="rounded border border-dashed border-slate-300 p-4 text-sm text-slate-600 dark:border-slate-700 dark:text-slate-400"
          data-testid="gpu-charts-empty"
        >
          No GPU readings in the last {hours} hour{hours > 1 ? "s" : ""}. The agent's readings are
          sampled once a minute while it sends heartbeats.
        </p>
      )}
      {data && samples > 0 && (
        <>
          <p className="sr-only" aria-live="polite">
            {data.gpus.length} GPU{data.gpus.length > 1 ? "s" : ""}, last {hours} hour
            {hours > 1 ? "s" : ""}, up to {Math.max(...data.gpus.map((g) => g.points.length))}{" "}
            readings per GPU. The table after the charts lists the figures.
          </p>
          <div className="grid gap-3 lg:grid-cols-3">
            {METRICS.map((m) => (
              <MetricChart key={m.key} history={data} metric={m} />
            ))}
          </div>
          <details className="rounded-lg border border-slate-200 p-3 dark:border-slate-800">
            <summary className="cursor-pointer text-sm font-medium">
              GPU readings as a table
            </summary>
            <SummaryTable history={data} />
          </details>
        </>
      )}
    </section>
  );
}
