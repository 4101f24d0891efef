import type { GpuReading } from "@/server/db/schema";

export function GpuList({ gpus }: { gpus: GpuReading[] }) {
  if (gpus.length === 0) return <p className="text-sm text-slate-500">No GPU readings yet.</p>;
  return (
    <ul className="space-y-2" aria-label="GPUs">
      {gpus.map((g) => (
        <li
          key={g.index}
          data-testid="gpu"
          className="rounded border border-slate-200 p-3 text-sm dark:border-slate-700"
        >
          <div className="flex flex-wrap items-center justify-between gap-x-3">
            <span className="font-medium">
              GPU {g.index}: {g.name}
            </span>
            <span
              className={
                g.healthy
                  ? "text-emerald-700 dark:text-emerald-400"
                  : "text-red-700 dark:text-red-300"
              }
            >
              {g.healthy ? "healthy" : `unhealthy: ${g.reasons.join(", ")}`}
            </span>
          </div>
          <p className="text-slate-600 dark:text-slate-400">
            {g.utilizationPct ?? "–"}% busy · {g.memoryUsedMiB ?? "–"} / {g.memoryTotalMiB ?? "–"}{" "}
            MiB · {g.temperatureC ?? "–"} °C · {g.powerDrawW ?? "–"} W
          </p>
        </li>
      ))}
    </ul>
  );
}
