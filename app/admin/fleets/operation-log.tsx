"use client";

import { useQuery } from "@tanstack/react-query";
import { useEffect, useRef, useState } from "react";
import { useTRPC } from "@/app/providers";

type Line = { seq: number; line: string; level: string };

/** An operation's log, streamed by polling with a cursor, with its progress as a bar. */
export function OperationLog({ operationId, title }: { operationId: string; title: string }) {
  const trpc = useTRPC();
  const [cursor, setCursor] = useState(0);
  const [lines, setLines] = useState<Line[]>([]);
  const seen = useRef(0);
  const logs = useQuery({
    ...trpc.operation.logs.queryOptions({ operationId, after: cursor }),
    refetchInterval: (q) => (q.state.data?.done ? false : 1_000),
  });
  useEffect(() => {
    const d = logs.data;
    if (!d || d.lines.length === 0) return;
    const fresh = d.lines.filter((l) => l.seq > seen.current);
    if (fresh.length === 0) return;
    seen.current = fresh.at(-1)?.seq ?? seen.current;
    setLines((prev) => [...prev, ...fresh].slice(-500));
    setCursor(d.nextCursor);
  }, [logs.data]);

  const status = logs.data?.status ?? "queued";
  const progress = logs.data?.progress;
  const pct =
    progress && progress.total > 0 ? Math.round((100 * progress.done) / progress.total) : null;
  return (
    <section
      aria-label={`Operation: ${title}`}
      className="space-y-2 rounded-lg border border-slate-200 bg-white p-4 dark:border-slate-800 dark:bg-slate-900"
    >
      <p className="text-sm font-medium">
        {title} — <span data-testid="operation-status">{status}</span>
      </p>
      {pct !== null && (
        <div>
          <div
            role="progressbar"
            aria-label="Resources done"
            aria-valuemin={0}
            aria-valuemax={progress?.total}
            aria-valuenow={progress?.done}
            className="h-2 w-full overflow-hidden rounded bg-slate-200 dark:bg-slate-800"
          >
            <div className="h-2 bg-indigo-600" style={{ width: `${pct}%` }} />
          </div>
          <p className="mt-1 text-xs text-slate-600 dark:text-slate-400">
            {progress?.done} of {progress?.total} done
          </p>
        </div>
      )}
      {logs.isError && (
        <p role="alert" className="text-sm text-red-700 dark:text-red-300">
          {logs.error.message}
        </p>
      )}
      <pre
        data-testid="operation-log"
        className="max-h-64 overflow-auto rounded bg-slate-950 p-3 text-xs text-slate-100"
      >
        {lines.length === 0 ? "Waiting for the worker…" : lines.map((l) => l.line).join("\n")}
      </pre>
    </section>
  );
}
