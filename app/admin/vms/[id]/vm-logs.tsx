"use client";

import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useId, useRef, useState } from "react";
import { useTRPC } from "@/app/providers";

type Source = "agent" | "cloud-init" | "container";
type Line = {
  id: number;
  at: Date | string;
  source: Source;
  level: "debug" | "info" | "warn" | "error";
  message: string;
};

/** How often the tail asks for new lines, and how many it keeps on screen. */
const POLL_MS = 2_000;
const KEEP = 2_000;

const LEVEL_CLASS: Record<Line["level"], string> = {
  debug: "text-slate-500 dark:text-slate-400",
  info: "text-slate-700 dark:text-slate-300",
  warn: "text-amber-800 dark:text-amber-300",
  error: "text-red-700 dark:text-red-300",
};

/** The VM's shipped log lines with a live tail (admin VM page). */
export function VmLogs({ vmId }: { vmId: string }) {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const [source, setSource] = useState<Source | "">("");
  const [paused, setPaused] = useState(false);
  const [follow, setFollow] = useState(true);
  const [lines, setLines] = useState<Line[]>([]);
  const [loaded, setLoaded] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const cursor = useRef<number | null>(null);
  const box = useRef<HTMLDivElement>(null);
  const ids = { source: useId(), follow: useId() };

  // A new filter starts over from the newest lines.
  // biome-ignore lint/correctness/useExhaustiveDependencies: reset on filter or VM change only
  useEffect(() => {
    cursor.current = null;
    setLines([]);
    setLoaded(false);
  }, [source, vmId]);

  useEffect(() => {
    if (paused) return;
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const page = await queryClient.fetchQuery({
          ...trpc.vm.logs.queryOptions({
            vmId,
            limit: cursor.current === null ? 200 : 500,
            ...(cursor.current === null ? {} : { afterId: cursor.current }),
            ...(source ? { source } : {}),
          }),
          staleTime: 0,
          gcTime: 0,
        });
        if (stopped) return;
        cursor.current = page.cursor;
        if (page.lines.length > 0) setLines((old) => [...old, ...page.lines].slice(-KEEP));
        setLoaded(true);
        setError(null);
      } catch (err) {
        if (!stopped) setError(err instanceof Error ? err.message : "Could not load log lines.");
      }
      if (!stopped) timer = setTimeout(tick, POLL_MS);
    };
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [paused, source, vmId, queryClient, trpc]);

  // biome-ignore lint/correctness/useExhaustiveDependencies: scroll when lines change
  useEffect(() => {
    const el = box.current;
    if (follow && el) el.scrollTop = el.scrollHeight;
  }, [lines, follow]);

  return (
    <section aria-labelledby="logs-heading" className="space-y-2">
      <h2 id="logs-heading" className="text-lg font-semibold">
        Logs
      </h2>
      <div className="flex flex-wrap items-center gap-4 text-sm">
        <label htmlFor={ids.source} className="flex items-center gap-2">
          Source
          <select
            id={ids.source}
            value={source}
            onChange={(e) => setSource(e.target.value as Source | "")}
            className="rounded border border-slate-300 bg-white px-2 py-1 dark:border-slate-700 dark:bg-slate-900"
          >
            <option value="">All sources</option>
            <option value="agent">Agent</option>
            <option value="cloud-init">cloud-init</option>
            <option value="container">Research container</option>
          </select>
        </label>
        <button
          type="button"
          onClick={() => setPaused((p) => !p)}
          aria-pressed={paused}
          className="rounded border border-slate-400 px-3 py-1 hover:bg-slate-100 dark:hover:bg-slate-800"
        >
          {paused ? "Resume live tail" : "Pause live tail"}
        </button>
        <label htmlFor={ids.follow} className="flex items-center gap-2">
          <input
            id={ids.follow}
            type="checkbox"
            checked={follow}
            onChange={(e) => setFollow(e.target.checked)}
          />
          Scroll to newest
        </label>
        <span className="text-slate-600 dark:text-slate-400" data-testid="logs-status">
          {paused ? "Paused" : "Live"} · {lines.length} line{lines.length === 1 ? "" : "s"}
        </span>
      </div>
      {error && (
        <p role="alert" className="text-sm text-red-700 dark:text-red-300">
          Could not load log lines: {error} (retrying)
        </p>
      )}
      <div
        ref={box}
        role="log"
        aria-label="VM log lines"
        aria-live="off"
        // biome-ignore lint/a11y/noNoninteractiveTabindex: a scrollable region must be reachable by keyboard
        tabIndex={0}
        data-testid="vm-logs"
        className="max-h-96 overflow-auto rounded-lg border border-slate-200 bg-slate-50 p-2 font-mono text-xs focus:outline-2 focus:outline-indigo-600 dark:border-slate-800 dark:bg-slate-950"
      >
        {!loaded && !error ? (
          <p className="p-2 text-slate-600 dark:text-slate-400">Loading log lines…</p>
        ) : lines.length === 0 ? (
          <p className="p-2 text-slate-600 dark:text-slate-400" data-testid="vm-logs-empty">
            No log lines{source ? ` from ${source}` : ""} yet. The agent ships its own lines and
            those of cloud-init and the research container every few seconds.
          </p>
        ) : (
          <ol>
            {lines.map((l) => (
              <li key={l.id} className="flex gap-2 whitespace-pre-wrap break-all py-px">
                <time
                  dateTime={new Date(l.at).toISOString()}
                  className="shrink-0 tabular-nums text-slate-500 dark:text-slate-400"
                >
                  {new Date(l.at).toLocaleTimeString()}
                </time>
                <span className="w-20 shrink-0 text-indigo-700 dark:text-indigo-300">
                  {l.source}
                </span>
                <span className={`w-10 shrink-0 uppercase ${LEVEL_CLASS[l.level]}`}>{l.level}</span>
                <span className={LEVEL_CLASS[l.level]}>{l.message}</span>
              </li>
            ))}
          </ol>
        )}
      </div>
    </section>
  );
}
