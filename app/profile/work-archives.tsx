"use client";

import { useQuery } from "@tanstack/react-query";
import { formatBytes } from "@/server/domain/format";
import { useTRPC } from "../providers";

/**
 * Work folders uploaded to S3 when a VM was released (fleets with a work archive), with a link
 * made for this view, until they expire. Shown only when there is one.
 */
export function WorkArchives() {
  const trpc = useTRPC();
  const archives = useQuery(trpc.profile.workArchives.queryOptions());
  if (!archives.data || archives.data.length === 0) return null;
  return (
    <section
      aria-labelledby="archives-heading"
      className="space-y-3 rounded-lg border border-slate-200 bg-white p-6 dark:border-slate-800 dark:bg-slate-900"
    >
      <h2 id="archives-heading" className="text-lg font-semibold">
        Saved work
      </h2>
      <p className="text-sm text-slate-600 dark:text-slate-400">
        Your home folder, saved when a VM was released. Each link works until the date shown.
      </p>
      <ul className="space-y-2" data-testid="work-archives">
        {archives.data.map((a) => (
          <li key={a.assignmentId} className="text-sm">
            {a.url ? (
              <a
                href={a.url}
                className="font-medium text-indigo-700 underline dark:text-indigo-300"
              >
                {a.vmName}, released {new Date(a.createdAt).toLocaleString()}
              </a>
            ) : (
              <span className="font-medium">
                {a.vmName}, released {new Date(a.createdAt).toLocaleString()}
              </span>
            )}
            {a.bytes !== null && a.status === "uploaded" && ` · ${formatBytes(a.bytes)}`}
            <span className="block text-slate-600 dark:text-slate-400">
              {a.status === "uploaded"
                ? `Available until ${new Date(a.expiresAt).toLocaleDateString()}.`
                : `Could not be saved: ${a.error ?? "unknown error"}. The VM was wiped.`}
            </span>
          </li>
        ))}
      </ul>
    </section>
  );
}
