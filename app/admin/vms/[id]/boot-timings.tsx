"use client";

import { useQuery } from "@tanstack/react-query";
import { useTRPC } from "@/app/providers";
import type { BootTimings as Timings } from "@/server/db/schema/vms";

type Step = { key: string; label: string; at: string | null | undefined; note?: string };

/** "1 min 05 s", "4.2 s", "—". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return "—";
  const sign = ms < 0 ? "−" : "";
  const abs = Math.abs(ms);
  if (abs < 60_000) return `${sign}${(abs / 1000).toFixed(abs < 10_000 ? 1 : 0)} s`;
  const m = Math.floor(abs / 60_000);
  const s = Math.round((abs % 60_000) / 1000);
  return `${sign}${m} min ${String(s).padStart(2, "0")} s`;
}

function steps(t: Timings): Step[] {
  return [
    { key: "boot", label: "Booted", at: t.bootedAt },
    {
      key: "cloud-init",
      label: "cloud-init finished",
      at: t.cloudInitFinishedAt,
      note:
        t.cloudInitStatus === "error"
          ? "finished with errors"
          : t.cloudInitStatus === "running"
            ? "still running"
            : t.cloudInitStatus === "disabled"
              ? "disabled on this VM"
              : t.cloudInitStatus === "done"
                ? undefined
                : "not seen",
    },
    { key: "container", label: "Research container ready", at: t.containerReadyAt },
    { key: "agent-start", label: "Agent started", at: t.agentStartedAt },
    { key: "registered", label: "Agent registered", at: t.registeredAt },
  ];
}

/** The VM's boot milestones as a timeline, each with its time after boot (admin VM page). */
export function BootTimings({ vmId }: { vmId: string }) {
  const trpc = useTRPC();
  // The same query (and cache entry) as the rest of the page: no extra request.
  const vm = useQuery({ ...trpc.vm.get.queryOptions({ vmId }), refetchInterval: 3_000 });
  const t = vm.data?.bootTimings ?? null;

  let body: React.ReactNode;
  if (vm.isPending) body = <p className="text-sm text-slate-500">Loading boot timings…</p>;
  else if (vm.isError)
    body = null; // the page shows the error once
  else if (!t)
    body = (
      <p className="text-sm text-slate-600 dark:text-slate-400" data-testid="boot-timings-empty">
        No boot timings yet. The agent reports them when it registers after a boot.
      </p>
    );
  else {
    // In the order they happened (an agent often starts before cloud-init is done); not yet
    // known milestones last.
    const time = (s: Step) => (s.at ? Date.parse(s.at) : Number.POSITIVE_INFINITY);
    const all = steps(t).sort((a, b) => time(a) - time(b));
    const origin =
      Date.parse(t.bootedAt ?? "") ||
      Math.min(...all.map((s) => Date.parse(s.at ?? "") || Infinity));
    const known = all.filter((s) => s.at).map((s) => Date.parse(s.at ?? "") - origin);
    const span = Math.max(1, ...known);
    let previous: number | null = null;
    body = (
      <ol
        className="space-y-2 rounded-lg border border-slate-200 bg-white p-4 text-sm dark:border-slate-800 dark:bg-slate-900"
        data-testid="boot-timings"
      >
        {all.map((s) => {
          const at = s.at ? Date.parse(s.at) : null;
          const offset = at !== null && Number.isFinite(origin) ? at - origin : null;
          const step = offset !== null && previous !== null ? offset - previous : null;
          if (offset !== null) previous = offset;
          return (
            <li
              key={s.key}
              className="grid grid-cols-[12rem_1fr] items-center gap-x-4 gap-y-1 sm:grid-cols-[14rem_8rem_1fr]"
            >
              <span className="font-medium">
                {s.label}
                {s.note && (
                  <span className="ml-1 font-normal text-slate-600 dark:text-slate-400">
                    ({s.note})
                  </span>
                )}
              </span>
              <span className="tabular-nums text-slate-700 dark:text-slate-300">
                {at === null ? (
                  "—"
                ) : (
                  <time dateTime={s.at ?? undefined} title={new Date(at).toLocaleString()}>
                    {offset === 0 || s.key === "boot"
                      ? new Date(at).toLocaleTimeString()
                      : `+${formatDuration(offset ?? 0)}`}
                  </time>
                )}
                {step !== null && step > 0 && s.key !== "boot" && (
                  <span className="sr-only"> ({formatDuration(step)} after the previous step)</span>
                )}
              </span>
              <span
                aria-hidden="true"
                className="col-span-2 h-2 rounded bg-slate-100 sm:col-span-1 dark:bg-slate-800"
              >
                {offset !== null && (
                  <span
                    className="block h-2 rounded bg-indigo-500 dark:bg-indigo-400"
                    style={{ width: `${Math.max(1, Math.min(100, (offset / span) * 100))}%` }}
                  />
                )}
              </span>
            </li>
          );
        })}
      </ol>
    );
  }
  return (
    <section aria-labelledby="boot-timings-heading" className="space-y-2">
      <h2 id="boot-timings-heading" className="text-lg font-semibold">
        Boot timings
      </h2>
      {body}
    </section>
  );
}
