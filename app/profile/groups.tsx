"use client";

import { useQuery } from "@tanstack/react-query";
import { useTRPC } from "../providers";

/** The researcher's groups and the restricted fleets each one opens to them. */
export function Groups() {
  const trpc = useTRPC();
  const groups = useQuery(trpc.profile.groups.queryOptions());
  return (
    <section
      aria-labelledby="groups-heading"
      className="space-y-3 rounded-lg border border-slate-200 bg-white p-6 dark:border-slate-800 dark:bg-slate-900"
    >
      <h2 id="groups-heading" className="text-lg font-semibold">
        Groups
      </h2>
      {groups.isPending && <p className="text-sm text-slate-500">Loading…</p>}
      {groups.isError && (
        <p role="alert" className="text-sm text-red-700 dark:text-red-300">
          Could not load your groups: {groups.error.message}
        </p>
      )}
      {groups.data?.length === 0 && (
        <p className="text-sm text-slate-600 dark:text-slate-400">
          You are in no group: you can claim VMs of every fleet that is open to all researchers. An
          admin adds you to a group for a course or lab with reserved VMs.
        </p>
      )}
      {groups.data && groups.data.length > 0 && (
        <ul className="space-y-2" data-testid="my-groups">
          {groups.data.map((g) => (
            <li key={g.id} className="text-sm">
              <span className="font-medium">{g.name}</span>
              {g.description && (
                <span className="text-slate-600 dark:text-slate-400"> — {g.description}</span>
              )}
              <span className="block text-slate-600 dark:text-slate-400">
                {g.fleets.length > 0
                  ? `Opens: ${g.fleets.join(", ")}`
                  : "Opens no reserved fleet at the moment."}
              </span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
