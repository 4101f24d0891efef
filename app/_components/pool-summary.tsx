"use client";

import { useQuery } from "@tanstack/react-query";
import type { Outlook, PoolSummary as Summary } from "@/server/domain/pool";
import { useTRPC } from "../providers";

/** "about 4 min" / "about 1 h 20 min": how long a wait is, rounded up to the minute. */
export function aboutMinutes(seconds: number): string {
  const minutes = Math.max(1, Math.ceil(seconds / 60));
  if (minutes < 60) return `about ${minutes} min`;
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return `about ${h} h${m ? ` ${m} min` : ""}`;
}

const OPERATION_WORDS: Record<string, string> = {
  "fleet.create": "being created",
  "fleet.scale": "being resized",
};

/** Why a claim from this fleet would fail now, and when capacity is expected; null when it would not. */
export function outlookText(o: Outlook): string | null {
  switch (o.kind) {
    case "available":
      return null;
    case "booting":
      return `${o.booting} ${o.booting === 1 ? "VM is" : "VMs are"} starting up${
        o.etaSeconds === null ? "." : `, usually ready in ${aboutMinutes(o.etaSeconds)}.`
      }`;
    case "scaling": {
      const p = o.operation.progress;
      return `The fleet is ${OPERATION_WORDS[o.operation.kind] ?? "changing"}${
        o.operation.status === "queued" ? " (queued)" : ""
      }${p && p.total > 0 ? `: ${p.done} of ${p.total} steps done` : ""}; new VMs will appear here.`;
    }
    case "full":
      return "Every VM is in use; one frees up when its researcher releases it.";
    case "out_of_service":
      return "No VM is in service: they are unhealthy or drained by an admin. Ask your LabLink admin.";
    case "empty":
      return "This fleet has no VMs yet.";
  }
}

/** What the pool as a whole says when nothing can be claimed. */
export function poolMessage(s: Summary): string | null {
  if (s.fleets.length === 0) {
    return s.otherGroupsFleets > 0
      ? "No fleet is open to your groups: the fleets here are reserved for other groups. Ask your LabLink admin to add you to one."
      : "There are no GPU fleets yet. Your LabLink admin creates them.";
  }
  if (s.totals.ready > 0) return null;
  const booting = s.fleets.flatMap((f) => (f.outlook.kind === "booting" ? [f.outlook] : []));
  if (booting.length > 0) {
    const n = booting.reduce((sum, o) => sum + o.booting, 0);
    const etas = booting.flatMap((o) => (o.etaSeconds === null ? [] : [o.etaSeconds]));
    return `No VM is free right now. ${n} ${n === 1 ? "VM is" : "VMs are"} starting up${
      etas.length ? `, usually ready in ${aboutMinutes(Math.min(...etas))}` : ""
    }.`;
  }
  if (s.fleets.some((f) => f.outlook.kind === "scaling"))
    return "No VM is free right now. A fleet is being created or resized; new VMs will appear here.";
  if (s.fleets.some((f) => f.outlook.kind === "full"))
    return "No VM is free right now: every VM is in use. One frees up when its researcher releases it.";
  return "No VM can be claimed right now: none is in service. Ask your LabLink admin.";
}

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
