"use client";

import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useTRPC } from "@/app/providers";

const when = (at: Date | string) =>
  new Date(at).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });

type Pool = { desiredReady: number; maxSize: number; paused: boolean } | null;
type PoolStatus = {
  status: string;
  reason: string | null;
  retryAt: Date | null;
  consecutiveFailures: number;
} | null;
type NextChange = {
  at: Date;
  kind: "size" | "ready" | "destroy";
  size: number;
  source: "once" | "recurring";
} | null;

/** The fleet card's next scheduled change: "Tue 31 Mar, 09:00 → 8 ready (weekly slot)". */
export function NextChangeLine(props: { next: NextChange }) {
  const { next } = props;
  return (
    <p data-testid="fleet-next-change">
      Next change:{" "}
      {next
        ? `${when(next.at)} → ${
            next.kind === "destroy"
              ? "destroy the fleet"
              : next.kind === "ready"
                ? `${next.size} ready`
                : `${next.size} ${next.size === 1 ? "VM" : "VMs"}`
          }${next.source === "recurring" ? " (recurring slot)" : ""}`
        : "none scheduled"}
    </p>
  );
}

/**
 * A fleet's warm pool: how many ready VMs it keeps and at most how many in all, why it is not at
 * that size (paused, backing off after failed launches, at its maximum, an operation running),
 * and the controls to change, pause or resume it.
 */
export function FleetWarmPool(props: {
  fleet: { id: string; name: string; warmPool: Pool; warmPoolStatus: PoolStatus };
}) {
  const { fleet } = props;
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const refresh = () => queryClient.invalidateQueries();
  const set = useMutation(trpc.fleet.setWarmPool.mutationOptions({ onSuccess: refresh }));
  const pause = useMutation(trpc.fleet.pauseWarmPool.mutationOptions({ onSuccess: refresh }));
  const resume = useMutation(trpc.fleet.resumeWarmPool.mutationOptions({ onSuccess: refresh }));
  const [ready, setReady] = useState(String(fleet.warmPool?.desiredReady ?? 2));
  const [max, setMax] = useState(String(fleet.warmPool?.maxSize ?? 10));
  const pool = fleet.warmPool;
  const st = fleet.warmPoolStatus;
  const error = set.error ?? pause.error ?? resume.error;
  const id = `pool-${fleet.id}`;
  return (
    <div className="space-y-1 text-sm">
      <p data-testid="fleet-warm-pool">
        Warm pool:{" "}
        {pool ? `${pool.desiredReady} ready, at most ${pool.maxSize} VMs` : "off (sized by hand)"}
        {st && (
          <span
            data-testid="fleet-pool-status"
            className="ml-2 rounded bg-slate-100 px-1.5 py-0.5 text-xs dark:bg-slate-800"
          >
            {st.status}
          </span>
        )}
      </p>
      {st?.reason && (
        <p data-testid="fleet-pool-reason" className="text-amber-800 dark:text-amber-300">
          {st.reason}
        </p>
      )}
      <div className="flex flex-wrap items-end gap-2">
        <div>
          <label htmlFor={`${id}-ready`} className="mb-1 block">
            Ready VMs
          </label>
          <input
            id={`${id}-ready`}
            type="number"
            min={0}
            max={500}
            value={ready}
            onChange={(e) => setReady(e.target.value)}
            className="w-20 rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-950"
          />
        </div>
        <div>
          <label htmlFor={`${id}-max`} className="mb-1 block">
            Most VMs in all
          </label>
          <input
            id={`${id}-max`}
            type="number"
            min={0}
            max={500}
            value={max}
            onChange={(e) => setMax(e.target.value)}
            className="w-20 rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-950"
          />
        </div>
        <button
          type="button"
          disabled={set.isPending}
          onClick={() =>
            set.mutate({
              fleetId: fleet.id,
              policy: { desiredReady: Number(ready), maxSize: Number(max) },
            })
          }
          className="rounded border px-2 py-1"
        >
          {pool ? "Save warm pool" : "Turn on warm pool"}
        </button>
        {pool &&
          (pool.paused ? (
            <button
              type="button"
              disabled={resume.isPending}
              onClick={() => resume.mutate({ fleetId: fleet.id })}
              className="rounded border px-2 py-1"
            >
              Resume warm pool of {fleet.name}
            </button>
          ) : (
            <button
              type="button"
              disabled={pause.isPending}
              onClick={() => pause.mutate({ fleetId: fleet.id })}
              className="rounded border px-2 py-1"
            >
              Pause warm pool of {fleet.name}
            </button>
          ))}
        {pool && (
          <button
            type="button"
            disabled={set.isPending}
            onClick={() => set.mutate({ fleetId: fleet.id, policy: null })}
            className="rounded border px-2 py-1"
          >
            Turn off warm pool
          </button>
        )}
      </div>
      {error && (
        <p role="alert" className="text-red-700 dark:text-red-300">
          {error.message}
        </p>
      )}
    </div>
  );
}
