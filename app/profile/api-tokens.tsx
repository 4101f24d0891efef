"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef, useState } from "react";
import { useTRPC } from "../providers";

const EXPIRY = [
  { label: "7 days", days: 7 },
  { label: "30 days", days: 30 },
  { label: "90 days", days: 90 },
  { label: "1 year", days: 365 },
] as const;

const when = (d: Date | null) => (d ? d.toLocaleString() : "never");

/**
 * Personal API tokens (admins) for the `lablink` CLI and scripts: created with a name, a scope
 * and an expiry, shown once, listed with their last use, revocable.
 */
export function ApiTokens() {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const tokens = useQuery(trpc.profile.apiTokens.list.queryOptions());
  const [name, setName] = useState("");
  const [scope, setScope] = useState<"read" | "admin">("read");
  const [expiresInDays, setExpiresInDays] = useState(90);
  const [created, setCreated] = useState<{ name: string; token: string } | null>(null);
  const shownRef = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (created) shownRef.current?.focus();
  }, [created]);
  const refresh = () =>
    queryClient.invalidateQueries({ queryKey: trpc.profile.apiTokens.list.queryKey() });
  const create = useMutation(
    trpc.profile.apiTokens.create.mutationOptions({
      onSuccess: (r) => {
        setCreated({ name: r.name, token: r.token });
        setName("");
        return refresh();
      },
    }),
  );
  const revoke = useMutation(trpc.profile.apiTokens.revoke.mutationOptions({ onSuccess: refresh }));

  return (
    <section
      aria-labelledby="api-tokens-heading"
      className="space-y-4 rounded-lg border border-slate-200 bg-white p-6 dark:border-slate-800 dark:bg-slate-900"
    >
      <h2 id="api-tokens-heading" className="text-lg font-semibold">
        API tokens
      </h2>
      <p className="text-sm text-slate-600 dark:text-slate-400">
        For the <code>lablink</code> command-line tool and scripts: set <code>LABLINK_URL</code> and{" "}
        <code>LABLINK_TOKEN</code>. A token acts as you; a read-only token can list and read but not
        change anything. It stops working when it expires, when you revoke it, or if you stop being
        an admin.
      </p>
      {created && (
        <div
          ref={shownRef}
          tabIndex={-1}
          role="status"
          className="space-y-2 rounded border border-emerald-300 bg-emerald-50 p-3 text-sm dark:border-emerald-800 dark:bg-emerald-950"
        >
          <p>
            Your new token <span className="font-medium">{created.name}</span>. Copy it now: it is
            not shown again.
          </p>
          <code className="block break-all font-mono text-xs" data-testid="new-api-token">
            {created.token}
          </code>
          <button
            type="button"
            onClick={() => setCreated(null)}
            className="rounded border border-slate-300 px-2 py-1 dark:border-slate-700"
          >
            Done
          </button>
        </div>
      )}
      {tokens.isError && (
        <p role="alert" className="text-sm text-red-700 dark:text-red-300">
          {tokens.error.message}
        </p>
      )}
      {revoke.isError && (
        <p role="alert" className="text-sm text-red-700 dark:text-red-300">
          {revoke.error.message}
        </p>
      )}
      <ul className="space-y-2" aria-label="Your API tokens" data-testid="api-tokens">
        {tokens.data?.length === 0 && <li className="text-sm text-slate-500">No tokens yet.</li>}
        {tokens.data?.map((k) => (
          <li
            key={k.id}
            className="flex flex-wrap items-center justify-between gap-2 rounded border border-slate-200 p-3 text-sm dark:border-slate-700"
          >
            <span>
              <span className="font-medium">{k.name}</span>{" "}
              <span className="text-slate-600 dark:text-slate-400">
                {k.scope === "read" ? "read-only" : "admin"} · {k.status} · last used{" "}
                {when(k.lastUsedAt)} · expires {when(k.expiresAt)}
              </span>
            </span>
            {k.status === "active" && (
              <button
                type="button"
                onClick={() => revoke.mutate({ id: k.id })}
                disabled={revoke.isPending}
                className="rounded border border-red-700 px-2 py-1 text-red-700 hover:bg-red-50 dark:border-red-400 dark:text-red-300 dark:hover:bg-red-950"
                aria-label={`Revoke token ${k.name}`}
              >
                Revoke
              </button>
            )}
          </li>
        ))}
      </ul>
      <form
        className="flex flex-wrap items-end gap-3"
        onSubmit={(e) => {
          e.preventDefault();
          create.mutate({ name, scope, expiresInDays });
        }}
      >
        <div>
          <label htmlFor="api-token-name" className="mb-1 block text-sm font-medium">
            Name
          </label>
          <input
            id="api-token-name"
            required
            maxLength={64}
            value={name}
            onChange={(e) => setName(e.target.value)}
            placeholder="nightly usage export"
            aria-invalid={create.isError}
            aria-describedby={create.isError ? "api-token-error" : undefined}
            className="rounded border border-slate-300 px-3 py-2 dark:border-slate-700 dark:bg-slate-950"
          />
        </div>
        <div>
          <label htmlFor="api-token-scope" className="mb-1 block text-sm font-medium">
            Scope
          </label>
          <select
            id="api-token-scope"
            value={scope}
            onChange={(e) => setScope(e.target.value === "admin" ? "admin" : "read")}
            className="rounded border border-slate-300 px-3 py-2 dark:border-slate-700 dark:bg-slate-950"
          >
            <option value="read">Read-only</option>
            <option value="admin">Admin (can change things)</option>
          </select>
        </div>
        <div>
          <label htmlFor="api-token-expiry" className="mb-1 block text-sm font-medium">
            Expires after
          </label>
          <select
            id="api-token-expiry"
            value={expiresInDays}
            onChange={(e) => setExpiresInDays(Number(e.target.value))}
            className="rounded border border-slate-300 px-3 py-2 dark:border-slate-700 dark:bg-slate-950"
          >
            {EXPIRY.map((x) => (
              <option key={x.days} value={x.days}>
                {x.label}
              </option>
            ))}
          </select>
        </div>
        <button
          type="submit"
          disabled={create.isPending}
          className="rounded bg-indigo-600 px-4 py-2 font-medium text-white hover:bg-indigo-700 disabled:opacity-60"
        >
          {create.isPending ? "Creating…" : "Create token"}
        </button>
        {create.isError && (
          <p
            id="api-token-error"
            role="alert"
            className="w-full text-sm text-red-700 dark:text-red-300"
          >
            {create.error.message}
          </p>
        )}
      </form>
    </section>
  );
}
