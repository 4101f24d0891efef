import type { GpuReading, VmState } from "@/server/db/schema";

export function age(date: Date | string | null): string {
  if (!date) return "never";
  const s = Math.max(0, Math.round((Date.now() - new Date(date).getTime()) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

const STATE_STYLE: Partial<Record<VmState, string>> = {
  ready: "bg-emerald-100 text-emerald-900 dark:bg-emerald-950 dark:text-emerald-200",
  claimed: "bg-indigo-100 text-indigo-900 dark:bg-indigo-950 dark:text-indigo-200",
  failed: "bg-red-100 text-red-900 dark:bg-red-950 dark:text-red-200",
  draining: "bg-amber-100 text-amber-900 dark:bg-amber-950 dark:text-amber-200",
};

export function StateBadge({ state }: { state: VmState }) {
  return (
    <span
      className={`rounded px-2 py-0.5 text-xs font-medium ${STATE_STYLE[state] ?? "bg-slate-100 text-slate-800 dark:bg-slate-800 dark:text-slate-200"}`}
    >
      {state}
    </span>
  );
}

/** Health with the reasons one click away (a disclosure, so keyboard and touch users get them). */
export function HealthBadge({
  healthy,
  reasons,
  gpus,
}: {
  healthy: boolean;
  reasons: string[];
  gpus: GpuReading[];
}) {
  if (healthy) {
    return (
      <span className="text-emerald-800 dark:text-emerald-300">
        healthy{gpus.length ? ` · ${gpus.length} × ${gpus[0]?.name}` : ""}
      </span>
    );
  }
  return (
    <details className="text-red-800 dark:text-red-300">
      <summary className="cursor-pointer">
        unhealthy{reasons.length ? ` (${reasons.length})` : ""}
      </summary>
      <ul className="mt-1 list-disc pl-5 text-xs">
        {reasons.map((r) => (
          <li key={r}>{r}</li>
        ))}
      </ul>
    </details>
  );
}
