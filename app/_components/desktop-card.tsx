"use client";

import { useQuery } from "@tanstack/react-query";
import Link from "next/link";
import { useTRPC } from "../providers";

/**
 * The holder's way to the browser desktop, and the notice that an admin is looking at it now
 * (every admin view is also in the audit log).
 */
export function DesktopCard({ vmId }: { vmId: string }) {
  const trpc = useTRPC();
  const status = useQuery({
    ...trpc.vm.desktop.queryOptions({ vmId }),
    refetchInterval: 5_000,
    retry: false,
  });
  const s = status.data;
  return (
    <div className="space-y-2 text-sm">
      {s?.adminViewing && (
        <p
          role="alert"
          data-testid="desktop-admin-viewing"
          className="rounded border border-amber-300 bg-amber-50 p-3 dark:border-amber-800 dark:bg-amber-950"
        >
          An admin is viewing your VM's desktop right now.
        </p>
      )}
      {s?.available ? (
        <Link
          href={`/desktop/${vmId}`}
          data-testid="open-desktop"
          className="inline-block rounded bg-indigo-600 px-3 py-1.5 font-medium text-white hover:bg-indigo-700"
        >
          Open the desktop in your browser
        </Link>
      ) : s?.reason ? (
        <p className="text-slate-600 dark:text-slate-400">Browser desktop: {s.reason}</p>
      ) : null}
    </div>
  );
}
