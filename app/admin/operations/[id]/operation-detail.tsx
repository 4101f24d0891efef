"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import Link from "next/link";
import { useTRPC } from "@/app/providers";
import { OperationLog } from "../../fleets/operation-log";
import {
  ConfirmButton,
  ErrorMessage,
  Loading,
  linkClass,
  panelClass,
  StatusBadge,
  When,
} from "../../ui";

export function OperationDetail({ operationId }: { operationId: string }) {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const op = useQuery({
    ...trpc.operation.get.queryOptions({ operationId }),
    refetchInterval: (q) =>
      q.state.data && ["succeeded", "failed", "cancelled"].includes(q.state.data.status)
        ? false
        : 2_000,
    retry: false,
  });
  const cancel = useMutation(
    trpc.operation.cancel.mutationOptions({ onSuccess: () => queryClient.invalidateQueries() }),
  );

  const back = (
    <p className="text-sm">
      <Link href="/admin/operations" className={linkClass}>
        ← All operations
      </Link>
    </p>
  );
  if (op.isPending)
    return (
      <>
        {back}
        <Loading what="the operation" />
      </>
    );
  if (op.isError)
    return (
      <>
        {back}
        <ErrorMessage error={op.error} prefix="Could not load this operation" />
      </>
    );
  const o = op.data;
  const active = o.status === "queued" || o.status === "running";
  const vmId = o.vmId;

  return (
    <div className="space-y-6">
      {back}
      <h1 className="flex flex-wrap items-center gap-3 text-2xl font-semibold">
        <span className="font-mono">{o.kind}</span>
        <span data-testid="detail-status">
          <StatusBadge status={o.status} />
        </span>
      </h1>
      <dl className={`grid gap-x-6 gap-y-2 text-sm sm:grid-cols-2 ${panelClass}`}>
        <div>
          <dt className="text-slate-600 dark:text-slate-400">Fleet</dt>
          <dd>
            <Link href={`/admin/operations?fleet=${o.fleetId}`} className={linkClass}>
              {o.fleetName}
            </Link>
          </dd>
        </div>
        {vmId && (
          <div>
            <dt className="text-slate-600 dark:text-slate-400">VM</dt>
            <dd>
              <Link href={`/admin/vms/${vmId}`} className={`font-mono ${linkClass}`}>
                {vmId}
              </Link>
            </dd>
          </div>
        )}
        <div>
          <dt className="text-slate-600 dark:text-slate-400">Requested by</dt>
          <dd>{o.requestedByEmail ?? o.requestedByName ?? "LabLink (system)"}</dd>
        </div>
        <div>
          <dt className="text-slate-600 dark:text-slate-400">Attempts</dt>
          <dd>
            {o.attempts} of {o.maxAttempts}
          </dd>
        </div>
        <div>
          <dt className="text-slate-600 dark:text-slate-400">Requested</dt>
          <dd>
            <When at={o.createdAt} />
          </dd>
        </div>
        <div>
          <dt className="text-slate-600 dark:text-slate-400">Started</dt>
          <dd>
            <When at={o.startedAt} />
          </dd>
        </div>
        <div>
          <dt className="text-slate-600 dark:text-slate-400">Finished</dt>
          <dd>
            <When at={o.finishedAt} />
          </dd>
        </div>
        {Object.keys(o.params).length > 0 && (
          <div className="sm:col-span-2">
            <dt className="text-slate-600 dark:text-slate-400">Parameters</dt>
            <dd className="font-mono text-xs break-all">{JSON.stringify(o.params)}</dd>
          </div>
        )}
        <div className="sm:col-span-2">
          <dt className="text-slate-600 dark:text-slate-400">Audit</dt>
          <dd>
            <Link
              href={`/admin/audit?targetKind=fleet&targetId=${o.fleetId}`}
              className={linkClass}
            >
              This fleet's audit log
            </Link>
          </dd>
        </div>
      </dl>

      {o.error && (
        <div
          role="alert"
          className="rounded border border-red-300 bg-red-50 p-3 text-sm dark:border-red-800 dark:bg-red-950"
        >
          <p className="font-medium">{o.status === "failed" ? "The operation failed" : "Error"}</p>
          <p data-testid="operation-error" className="whitespace-pre-wrap">
            {o.error}
          </p>
        </div>
      )}

      {active && (
        <div className="space-y-2">
          {o.cancelRequestedAt ? (
            <p className="text-sm text-amber-800 dark:text-amber-200" role="status">
              Cancellation requested; the worker stops at the next safe point.
            </p>
          ) : (
            <ConfirmButton
              label="Cancel operation"
              question="Stop this operation? Resources already created stay until the fleet is scaled or destroyed."
              confirmLabel="Yes, cancel it"
              danger
              pending={cancel.isPending}
              onConfirm={() => cancel.mutate({ operationId })}
            />
          )}
          <ErrorMessage error={cancel.error} prefix="Could not cancel" />
        </div>
      )}

      <OperationLog operationId={operationId} title={`${o.kind} on ${o.fleetName}`} />
    </div>
  );
}
