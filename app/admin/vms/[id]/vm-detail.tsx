"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import Link from "next/link";
import { useState } from "react";
import { GpuList } from "@/app/_components/gpu-list";
import { useTRPC } from "@/app/providers";
import { age, HealthBadge, StateBadge } from "../../badges";
import { OperationLog } from "../../fleets/operation-log";

type Action = "drain" | "undrain" | "forceRelease" | "markFailed" | "reboot" | "terminate";

const ACTION_LABELS: Record<Action, { button: string; confirm: string }> = {
  drain: {
    button: "Drain",
    confirm:
      "Drain this VM? No one new can claim it; its current researcher keeps it until they release.",
  },
  undrain: { button: "Undrain", confirm: "Put this VM back into service?" },
  forceRelease: {
    button: "Force release",
    confirm: "Take this VM away from its researcher? Their work on it will be wiped.",
  },
  markFailed: {
    button: "Mark failed",
    confirm: "Mark this VM failed? It leaves the pool and its researcher loses it.",
  },
  reboot: {
    button: "Reboot",
    confirm: "Reboot this VM? A researcher on it is disconnected and gets it back when it is up.",
  },
  terminate: {
    button: "Terminate",
    confirm:
      "Terminate this VM for good? Its researcher loses it and everything on it; the fleet shrinks by one.",
  },
};

/** A bring-your-own machine is not LabLink's to reboot; terminating it takes it out of LabLink. */
const BYO_LABELS: Partial<Record<Action, { button: string; confirm: string }>> = {
  terminate: {
    button: "Remove from fleet",
    confirm:
      "Take this machine out of LabLink? Its agent is told to stop and its token is revoked; a researcher on it loses it. The machine itself keeps running.",
  },
};

/** What the last action did: the VM's new state, or the operation it started. */
type Outcome = { action: Action; state?: string; operationId?: string };

export function VmDetail({ vmId }: { vmId: string }) {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const vm = useQuery({ ...trpc.vm.get.queryOptions({ vmId }), refetchInterval: 3_000 });
  const [pending, setPending] = useState<Action | null>(null);
  const [reason, setReason] = useState("");
  const [outcome, setOutcome] = useState<Outcome | null>(null);
  const done = (action: Action) => (r: { state?: string; operation?: { id: string } | null }) => {
    setPending(null);
    setReason("");
    setOutcome({ action, state: r.state, operationId: r.operation?.id });
    return queryClient.invalidateQueries();
  };
  const mutations = {
    drain: useMutation(trpc.vm.drain.mutationOptions({ onSuccess: done("drain") })),
    undrain: useMutation(trpc.vm.undrain.mutationOptions({ onSuccess: done("undrain") })),
    forceRelease: useMutation(
      trpc.vm.forceRelease.mutationOptions({ onSuccess: done("forceRelease") }),
    ),
    markFailed: useMutation(trpc.vm.markFailed.mutationOptions({ onSuccess: done("markFailed") })),
    reboot: useMutation(trpc.vm.reboot.mutationOptions({ onSuccess: done("reboot") })),
    terminate: useMutation(trpc.vm.terminate.mutationOptions({ onSuccess: done("terminate") })),
  };
  const error = Object.values(mutations).find((m) => m.isError)?.error;

  if (vm.isPending) return <p className="text-sm text-slate-500">Loading VM…</p>;
  if (vm.isError) {
    return (
      <p role="alert" className="text-sm text-red-700 dark:text-red-300">
        {vm.error.message}
      </p>
    );
  }
  const v = vm.data;
  const available: Action[] = [];
  if (v.state === "ready" || v.state === "claimed") available.push("drain");
  if (v.state === "draining") available.push("undrain");
  if (v.holder) available.push("forceRelease");
  if (!["failed", "terminated", "terminating"].includes(v.state)) available.push("markFailed");
  const byo = v.fleet.driver === "byo";
  if (!byo && !["provisioning", "terminated", "terminating"].includes(v.state))
    available.push("reboot");
  if (!["terminated", "terminating"].includes(v.state)) available.push("terminate");

  const LABELS = byo ? { ...ACTION_LABELS, ...BYO_LABELS } : ACTION_LABELS;
  const run = (a: Action) => {
    if (a === "markFailed") mutations.markFailed.mutate({ vmId, reason });
    else mutations[a].mutate({ vmId });
  };

  return (
    <div className="space-y-6">
      <p className="text-sm">
        <Link href="/admin" className="text-indigo-700 hover:underline dark:text-indigo-300">
          ← Fleet dashboard
        </Link>
      </p>
      <h1 className="flex flex-wrap items-center gap-3 text-2xl font-semibold">
        <span className="font-mono">{v.name}</span>
        <span data-testid="detail-state">
          <StateBadge state={v.state} />
        </span>
      </h1>
      <dl className="grid grid-cols-[max-content_1fr] gap-x-6 gap-y-2 rounded-lg border border-slate-200 bg-white p-4 text-sm dark:border-slate-800 dark:bg-slate-900">
        <dt className="text-slate-500">Fleet</dt>
        <dd>
          {v.fleet.name} ({v.fleet.driver}, {v.fleet.instanceType})
        </dd>
        <dt className="text-slate-500">Holder</dt>
        <dd>
          {v.holder ? `${v.holder.name ?? ""} <${v.holder.email ?? "?"}>` : "—"}
          {v.holder && (v.state === "claimed" || v.state === "draining") && (
            <>
              {" · "}
              <Link
                href={`/desktop/${v.id}`}
                data-testid="admin-open-desktop"
                className="text-indigo-700 hover:underline dark:text-indigo-300"
              >
                View desktop (audited; the holder is told)
              </Link>
            </>
          )}
        </dd>
        <dt className="text-slate-500">Health</dt>
        <dd>
          <HealthBadge healthy={v.healthy} reasons={v.healthReasons} gpus={v.gpus} />
        </dd>
        {v.recovery && (
          <>
            <dt className="text-slate-500">Automatic recovery</dt>
            <dd data-testid="detail-recovery">
              {v.recovery.problem.replace("_", " ")} since{" "}
              {new Date(v.recovery.detectedAt).toLocaleString()}
              {v.recovery.step
                ? ` · last step: ${v.recovery.step.replace("_", " ")} (attempt ${v.recovery.stepAttempts}, ${v.recovery.totalAttempts} in all)${v.recovery.lastAttemptAt ? ` at ${new Date(v.recovery.lastAttemptAt).toLocaleString()}` : ""}`
                : " · no step taken yet"}
              {v.recovery.noticeAt ? " · holder told" : ""}
            </dd>
          </>
        )}
        {v.startupIssue && (
          <>
            <dt className="text-slate-500">
              {v.state === "failed" ? "Startup failed" : "Startup warning"}
            </dt>
            <dd>
              <pre
                data-testid="detail-startup-issue"
                className={`whitespace-pre-wrap break-words rounded p-2 font-mono text-xs ${v.state === "failed" ? "bg-red-50 text-red-900 dark:bg-red-950 dark:text-red-200" : "bg-amber-50 text-amber-900 dark:bg-amber-950 dark:text-amber-200"}`}
              >
                {v.startupIssue}
              </pre>
            </dd>
          </>
        )}
        <dt className="text-slate-500">Last heartbeat</dt>
        <dd>{age(v.lastHeartbeatAt)}</dd>
        <dt className="text-slate-500">Agent</dt>
        <dd>
          {v.agentVersion ?? "not registered"} {v.hostname ? `on ${v.hostname}` : ""}
        </dd>
        <dt className="text-slate-500">Provider id</dt>
        <dd className="font-mono">{v.providerId ?? "—"}</dd>
        <dt className="text-slate-500">In use</dt>
        <dd>
          {v.inUse
            ? "yes"
            : v.idleSince
              ? `idle since ${new Date(v.idleSince).toLocaleString()}`
              : "no"}
        </dd>
      </dl>

      <section aria-labelledby="actions-heading" className="space-y-3">
        <h2 id="actions-heading" className="text-lg font-semibold">
          Actions
        </h2>
        <div className="flex flex-wrap gap-2">
          {available.map((a) => (
            <button
              key={a}
              type="button"
              onClick={() => setPending(a)}
              className="rounded border border-slate-400 px-3 py-1.5 text-sm hover:bg-slate-100 dark:hover:bg-slate-800"
            >
              {LABELS[a].button}
            </button>
          ))}
        </div>
        {pending && (
          <form
            className="space-y-2 rounded border border-amber-300 bg-amber-50 p-3 text-sm dark:border-amber-800 dark:bg-amber-950"
            onSubmit={(e) => {
              e.preventDefault();
              run(pending);
            }}
          >
            <p>{LABELS[pending].confirm}</p>
            {pending === "markFailed" && (
              <label className="block">
                Reason (shown in the VM's health)
                <input
                  required
                  minLength={3}
                  maxLength={500}
                  value={reason}
                  onChange={(e) => setReason(e.target.value)}
                  className="mt-1 block w-full rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-900"
                />
              </label>
            )}
            <div className="flex gap-2">
              <button
                type="submit"
                className="rounded bg-red-700 px-3 py-1.5 font-medium text-white hover:bg-red-800"
              >
                Yes, {LABELS[pending].button.toLowerCase()}
              </button>
              <button
                type="button"
                onClick={() => setPending(null)}
                className="rounded border px-3 py-1.5"
              >
                Cancel
              </button>
            </div>
          </form>
        )}
        {error && (
          <p role="alert" className="text-sm text-red-700 dark:text-red-300">
            {error.message}
          </p>
        )}
        {outcome && !pending && (
          <div data-testid="action-outcome" role="status" className="space-y-2 text-sm">
            {outcome.operationId ? (
              <>
                <p>
                  {LABELS[outcome.action].button} started as operation{" "}
                  <Link
                    href={`/admin/operations/${outcome.operationId}`}
                    className="font-mono text-indigo-700 hover:underline dark:text-indigo-300"
                  >
                    {outcome.operationId.slice(0, 8)}
                  </Link>
                  .
                </p>
                <OperationLog
                  key={outcome.operationId}
                  operationId={outcome.operationId}
                  title={`${LABELS[outcome.action].button} ${v.name}`}
                />
              </>
            ) : (
              <p>
                {LABELS[outcome.action].button}: the VM is now <strong>{outcome.state}</strong>.
              </p>
            )}
          </div>
        )}
      </section>

      <section aria-labelledby="gpus-heading" className="space-y-2">
        <h2 id="gpus-heading" className="text-lg font-semibold">
          GPUs
        </h2>
        <GpuList gpus={v.gpus} />
      </section>

      <section aria-labelledby="history-heading" className="space-y-2">
        <h2 id="history-heading" className="text-lg font-semibold">
          History
        </h2>
        <div className="overflow-x-auto rounded-lg border border-slate-200 bg-white dark:border-slate-800 dark:bg-slate-900">
          <table className="min-w-full text-left text-sm" data-testid="history">
            <thead className="border-b border-slate-200 bg-slate-50 dark:border-slate-800 dark:bg-slate-800">
              <tr>
                <th scope="col" className="px-3 py-2">
                  When
                </th>
                <th scope="col" className="px-3 py-2">
                  Who
                </th>
                <th scope="col" className="px-3 py-2">
                  What
                </th>
                <th scope="col" className="px-3 py-2">
                  State
                </th>
              </tr>
            </thead>
            <tbody>
              {v.history.map((h) => (
                <tr
                  key={h.id}
                  className="border-b border-slate-100 last:border-0 dark:border-slate-800"
                >
                  <td className="px-3 py-1.5 tabular-nums">{new Date(h.at).toLocaleString()}</td>
                  <td className="px-3 py-1.5">{h.actorKind}</td>
                  <td className="px-3 py-1.5 font-mono">{h.action}</td>
                  <td className="px-3 py-1.5">
                    {h.fromState ? `${h.fromState} → ${h.toState}` : ""}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </section>
    </div>
  );
}
