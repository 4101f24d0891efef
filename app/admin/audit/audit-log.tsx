"use client";

import { keepPreviousData, useQuery } from "@tanstack/react-query";
import Link from "next/link";
import { useEffect, useState } from "react";
import { useTRPC } from "@/app/providers";
import {
  buttonClass,
  CursorPager,
  Empty,
  ErrorMessage,
  FilterSelect,
  inputClass,
  Loading,
  linkClass,
  primaryClass,
  useCursorPages,
  When,
} from "../ui";
import { useUrlFilters } from "../use-url-filters";

const KEYS = ["action", "actorKind", "actor", "targetKind", "targetId", "from", "to"] as const;
type Filters = Record<(typeof KEYS)[number], string>;
const PAGE = 50;
const ACTOR_KINDS = ["user", "agent", "system"] as const;

/** Where a target lives in the admin UI, if it has a page. */
function targetHref(kind: string, id: string | null): string | null {
  if (!id) return null;
  if (kind === "vm") return `/admin/vms/${id}`;
  if (kind === "operation") return `/admin/operations/${id}`;
  if (kind === "fleet") return `/admin/operations?fleet=${id}`;
  if (kind === "user") return `/admin/audit?targetKind=user&targetId=${id}`;
  if (kind === "group") return "/admin/groups";
  if (kind === "enrollment_token") return "/admin/enrollment";
  return null;
}

// <input type="datetime-local"> speaks local time without a zone; the API wants instants.
const toDate = (s: string) => {
  if (!s) return undefined;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? undefined : d;
};

const TARGET_KINDS = ["vm", "fleet", "operation", "user", "group", "enrollment_token", "instance"];

export function AuditLog() {
  const trpc = useTRPC();
  const [f, setF] = useUrlFilters(KEYS);
  // The form edits a draft; the URL (and the query) change on submit, so typing does not refetch.
  const [draft, setDraft] = useState<Filters>(f);
  useEffect(() => setDraft(f), [f]);
  const pages = useCursorPages<number>();
  const cursor = pages.cursor;
  const log = useQuery({
    ...trpc.audit.list.queryOptions({
      limit: PAGE,
      action: f.action || undefined,
      actorKind: ACTOR_KINDS.includes(f.actorKind as never)
        ? (f.actorKind as (typeof ACTOR_KINDS)[number])
        : undefined,
      actor: f.actor || undefined,
      targetKind: f.targetKind || undefined,
      targetId: f.targetId || undefined,
      from: toDate(f.from),
      to: toDate(f.to),
      cursor,
    }),
    placeholderData: keepPreviousData,
    retry: false,
  });
  const filtered = KEYS.some((k) => f[k]);
  const field = (k: keyof Filters) => ({
    value: draft[k],
    onChange: (e: React.ChangeEvent<HTMLInputElement | HTMLSelectElement>) =>
      setDraft({ ...draft, [k]: e.target.value }),
  });

  return (
    <div className="space-y-4">
      <h1 className="text-2xl font-semibold">Audit log</h1>
      <p className="text-sm text-slate-600 dark:text-slate-400">
        Who did what, to what, and when — newest first. The address bar keeps the filters, so a
        filtered view can be shared.
      </p>
      <form
        aria-label="Filter the audit log"
        className="grid gap-3 sm:grid-cols-2 lg:grid-cols-4"
        onSubmit={(e) => {
          e.preventDefault();
          pages.reset();
          setF(draft);
        }}
      >
        <label className="flex flex-col gap-1 text-sm">
          Action
          <input
            className={inputClass}
            placeholder="vm.drain or vm.*"
            aria-describedby="action-help"
            {...field("action")}
          />
          <span id="action-help" className="text-xs text-slate-600 dark:text-slate-400">
            End with * for every action that starts so.
          </span>
        </label>
        <FilterSelect
          id="audit-actor-kind"
          label="Actor kind"
          anyLabel="Anyone"
          value={draft.actorKind}
          onChange={(actorKind) => setDraft({ ...draft, actorKind })}
          options={ACTOR_KINDS}
        />
        <label className="flex flex-col gap-1 text-sm">
          Actor (email or id)
          <input className={inputClass} placeholder="ada@example.edu" {...field("actor")} />
        </label>
        <FilterSelect
          id="audit-target-kind"
          label="Target kind"
          anyLabel="Anything"
          value={draft.targetKind}
          onChange={(targetKind) => setDraft({ ...draft, targetKind })}
          options={TARGET_KINDS}
        />
        <label className="flex flex-col gap-1 text-sm">
          Target id
          <input className={inputClass} {...field("targetId")} />
        </label>
        <label className="flex flex-col gap-1 text-sm">
          From
          <input type="datetime-local" className={inputClass} {...field("from")} />
        </label>
        <label className="flex flex-col gap-1 text-sm">
          Until
          <input type="datetime-local" className={inputClass} {...field("to")} />
        </label>
        <div className="flex items-end gap-2">
          <button type="submit" className={primaryClass}>
            Apply filters
          </button>
          {filtered && (
            <button
              type="button"
              className={buttonClass}
              onClick={() => {
                pages.reset();
                setF(Object.fromEntries(KEYS.map((k) => [k, ""])) as Filters);
              }}
            >
              Clear
            </button>
          )}
        </div>
      </form>

      {log.isPending && <Loading what="the audit log" />}
      <ErrorMessage error={log.error} prefix="Could not load the audit log" />
      {log.data && log.data.rows.length === 0 && (
        <Empty>
          {filtered ? "No events match these filters." : "Nothing has been audited yet."}
        </Empty>
      )}
      {log.data && log.data.rows.length > 0 && (
        <div className="overflow-x-auto rounded-lg border border-slate-200 dark:border-slate-800">
          <table className="w-full min-w-[52rem] text-left text-sm" aria-busy={log.isFetching}>
            <caption className="sr-only">Audit events, newest first</caption>
            <thead className="bg-slate-100 text-xs uppercase text-slate-700 dark:bg-slate-900 dark:text-slate-300">
              <tr>
                <th scope="col" className="px-3 py-2">
                  When
                </th>
                <th scope="col" className="px-3 py-2">
                  Actor
                </th>
                <th scope="col" className="px-3 py-2">
                  Action
                </th>
                <th scope="col" className="px-3 py-2">
                  Target
                </th>
                <th scope="col" className="px-3 py-2">
                  Details
                </th>
              </tr>
            </thead>
            <tbody className="divide-y divide-slate-200 bg-white align-top dark:divide-slate-800 dark:bg-slate-950">
              {log.data.rows.map((r) => {
                const href = targetHref(r.targetKind, r.targetId);
                const opId =
                  typeof r.details.operationId === "string" ? r.details.operationId : null;
                const { operationId: _op, ...rest } = r.details;
                return (
                  <tr key={r.id} data-testid="audit-row">
                    <td className="whitespace-nowrap px-3 py-2">
                      <When at={r.at} />
                    </td>
                    <td className="px-3 py-2">
                      {r.actorKind === "user" ? (
                        <span title={r.actorId ?? undefined}>
                          {r.actorEmail ?? r.actorName ?? r.actorId ?? "unknown user"}
                        </span>
                      ) : r.actorKind === "agent" ? (
                        <span>
                          agent
                          {r.actorId && (
                            <>
                              {" of "}
                              <Link href={`/admin/vms/${r.actorId}`} className={linkClass}>
                                VM
                              </Link>
                            </>
                          )}
                        </span>
                      ) : (
                        <span className="text-slate-600 dark:text-slate-400">system</span>
                      )}
                      {r.ip && (
                        <span className="block text-xs text-slate-500 dark:text-slate-400">
                          {r.ip}
                        </span>
                      )}
                    </td>
                    <td className="px-3 py-2 font-mono">
                      {r.action}
                      {r.fromState && (
                        <span className="block text-xs text-slate-500 dark:text-slate-400">
                          {r.fromState} → {r.toState}
                        </span>
                      )}
                    </td>
                    <td className="px-3 py-2">
                      <span className="text-slate-600 dark:text-slate-400">{r.targetKind} </span>
                      {href ? (
                        <Link href={href} className={`font-mono text-xs ${linkClass}`}>
                          {r.targetId}
                        </Link>
                      ) : (
                        <span className="font-mono text-xs">{r.targetId}</span>
                      )}
                      {opId && (
                        <Link
                          href={`/admin/operations/${opId}`}
                          className={`block text-xs ${linkClass}`}
                        >
                          View operation
                        </Link>
                      )}
                    </td>
                    <td className="max-w-xs px-3 py-2 font-mono text-xs break-all text-slate-700 dark:text-slate-300">
                      {Object.keys(rest).length ? JSON.stringify(rest) : ""}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <CursorPager newer={pages.newer} older={pages.older(log.data?.nextCursor)} />
    </div>
  );
}
