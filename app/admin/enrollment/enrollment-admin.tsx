"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef, useState } from "react";
import { useTRPC } from "@/app/providers";
import {
  buttonClass,
  ConfirmButton,
  Empty,
  ErrorMessage,
  inputClass,
  Loading,
  panelClass,
  primaryClass,
  When,
} from "../ui";

const EXPIRY = [
  { label: "1 hour", s: 3_600 },
  { label: "1 day", s: 86_400 },
  { label: "7 days", s: 7 * 86_400 },
  { label: "30 days", s: 30 * 86_400 },
] as const;

/** The command to run on the machine, as agent/README.md documents it. */
function enrollCommand(serverUrl: string, token: string) {
  // Enrolls once (token and VM id land in /var/lib/lablink-agent), then runs the agent; a
  // restart with the same command finds the enrollment and just runs.
  return `sudo node /opt/lablink/lablink-agent.mjs --server ${serverUrl} --enroll ${token}`;
}

function CopyButton({ text, label }: { text: string; label: string }) {
  const [copied, setCopied] = useState<"" | "ok" | "failed">("");
  return (
    <span className="inline-flex items-center gap-2">
      <button
        type="button"
        className={buttonClass}
        onClick={() =>
          navigator.clipboard
            .writeText(text)
            .then(() => setCopied("ok"))
            .catch(() => setCopied("failed"))
        }
      >
        {label}
      </button>
      <span role="status" className="text-xs text-slate-600 dark:text-slate-400">
        {copied === "ok"
          ? "Copied."
          : copied === "failed"
            ? "Copy failed: select the text and copy it."
            : ""}
      </span>
    </span>
  );
}

export function EnrollmentAdmin() {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const fleets = useQuery({ ...trpc.fleet.list.queryOptions(), refetchOnMount: "always" });
  const tokens = useQuery({ ...trpc.enrollment.list.queryOptions({}), refetchOnMount: "always" });
  const byo = fleets.data?.filter((f) => f.driver === "byo") ?? [];
  const [fleetId, setFleetId] = useState("");
  const [maxUses, setMaxUses] = useState(1);
  const [expiresInS, setExpiresInS] = useState<number>(86_400);
  const [label, setLabel] = useState("");
  const [created, setCreated] = useState<{ token: string; fleetName: string } | null>(null);
  const [origin, setOrigin] = useState("https://lablink.example.edu");
  useEffect(() => setOrigin(window.location.origin), []);
  const shownRef = useRef<HTMLElement>(null);
  useEffect(() => {
    if (created) shownRef.current?.focus();
  }, [created]);
  const refresh = () => queryClient.invalidateQueries();
  const create = useMutation(
    trpc.enrollment.create.mutationOptions({
      onSuccess: (r) => {
        setCreated({
          token: r.token,
          fleetName: byo.find((f) => f.id === (fleetId || byo[0]?.id))?.name ?? "",
        });
        setLabel("");
        return refresh();
      },
    }),
  );
  const revoke = useMutation(trpc.enrollment.revoke.mutationOptions({ onSettled: refresh }));
  const fleetName = new Map(fleets.data?.map((f) => [f.id, f.name]));
  const chosen = fleetId || byo[0]?.id || "";

  return (
    <div className="space-y-6">
      <h1 className="text-2xl font-semibold">Enrollment tokens</h1>
      <p className="text-sm text-slate-600 dark:text-slate-400">
        Bring-your-own machines (a fleet with the <code>byo</code> driver) join LabLink with an
        enrollment token: the agent trades it once for the machine's own credentials. LabLink stores
        only a hash, so a token is shown once, right after you create it.
      </p>

      {created && (
        <section
          ref={shownRef}
          tabIndex={-1}
          aria-labelledby="token-heading"
          className="space-y-3 rounded-lg border border-green-300 bg-green-50 p-4 text-sm dark:border-green-800 dark:bg-green-950"
        >
          <h2 id="token-heading" className="text-lg font-semibold">
            Token for {created.fleetName}: copy it now
          </h2>
          <p>This is the only time LabLink shows it. Anyone holding it can enroll a machine.</p>
          <pre
            data-testid="new-token"
            className="overflow-x-auto rounded bg-slate-950 p-3 font-mono text-xs text-slate-100"
          >
            {created.token}
          </pre>
          <CopyButton text={created.token} label="Copy token" />
          <p>On the machine, from a checkout of LabLink (see agent/README.md), run:</p>
          <pre
            data-testid="enroll-command"
            className="overflow-x-auto rounded bg-slate-950 p-3 font-mono text-xs text-slate-100"
          >
            {enrollCommand(origin, created.token)}
          </pre>
          <div className="flex flex-wrap gap-2">
            <CopyButton text={enrollCommand(origin, created.token)} label="Copy command" />
            <button type="button" className={buttonClass} onClick={() => setCreated(null)}>
              Done, hide it
            </button>
          </div>
        </section>
      )}

      <form
        aria-labelledby="new-token-heading"
        className={`grid gap-3 sm:grid-cols-2 lg:grid-cols-5 ${panelClass}`}
        onSubmit={(e) => {
          e.preventDefault();
          create.mutate({ fleetId: chosen, maxUses, expiresInS, label: label || undefined });
        }}
      >
        <h2 id="new-token-heading" className="text-lg font-semibold sm:col-span-2 lg:col-span-5">
          New token
        </h2>
        {fleets.isPending && <Loading what="fleets" />}
        <ErrorMessage error={fleets.error} prefix="Could not load fleets" />
        {fleets.data && byo.length === 0 ? (
          <div className="sm:col-span-2 lg:col-span-5">
            <Empty>
              No bring-your-own fleet yet. Create a fleet with the <code>byo</code> driver first
              (Fleets page or the API); its machines then enroll with tokens made here.
            </Empty>
          </div>
        ) : (
          <>
            <div className="flex flex-col gap-1 text-sm">
              <label htmlFor="enroll-fleet">Fleet</label>
              <select
                id="enroll-fleet"
                className={inputClass}
                value={chosen}
                onChange={(e) => setFleetId(e.target.value)}
              >
                {byo.map((f) => (
                  <option key={f.id} value={f.id}>
                    {f.name}
                  </option>
                ))}
              </select>
            </div>
            <div className="flex flex-col gap-1 text-sm">
              <label htmlFor="enroll-max-uses">Machines it may enroll</label>
              <input
                id="enroll-max-uses"
                type="number"
                min={1}
                max={1000}
                className={inputClass}
                value={maxUses}
                onChange={(e) => setMaxUses(Number(e.target.value))}
              />
            </div>
            <div className="flex flex-col gap-1 text-sm">
              <label htmlFor="enroll-expires">Expires after</label>
              <select
                id="enroll-expires"
                className={inputClass}
                value={expiresInS}
                onChange={(e) => setExpiresInS(Number(e.target.value))}
              >
                {EXPIRY.map((x) => (
                  <option key={x.s} value={x.s}>
                    {x.label}
                  </option>
                ))}
              </select>
            </div>
            <div className="flex flex-col gap-1 text-sm">
              <label htmlFor="enroll-label">Label (optional)</label>
              <input
                id="enroll-label"
                className={inputClass}
                value={label}
                maxLength={200}
                placeholder="Room 2.14 workstations"
                onChange={(e) => setLabel(e.target.value)}
              />
            </div>
            <div className="flex items-end">
              <button type="submit" className={primaryClass} disabled={create.isPending || !chosen}>
                Create token
              </button>
            </div>
          </>
        )}
        <div className="sm:col-span-2 lg:col-span-5">
          <ErrorMessage error={create.error} prefix="Could not create the token" />
        </div>
      </form>

      <section aria-labelledby="tokens-heading" className="space-y-3">
        <h2 id="tokens-heading" className="text-lg font-semibold">
          Tokens
        </h2>
        {tokens.isPending && <Loading what="tokens" />}
        <ErrorMessage error={tokens.error} prefix="Could not load tokens" />
        {tokens.data?.length === 0 && <Empty>No enrollment tokens yet.</Empty>}
        {tokens.data && tokens.data.length > 0 && (
          <div className="overflow-x-auto rounded-lg border border-slate-200 dark:border-slate-800">
            <table className="w-full min-w-[44rem] text-left text-sm">
              <caption className="sr-only">Enrollment tokens, newest first</caption>
              <thead className="bg-slate-100 text-xs uppercase text-slate-700 dark:bg-slate-900 dark:text-slate-300">
                <tr>
                  <th scope="col" className="px-3 py-2">
                    Fleet
                  </th>
                  <th scope="col" className="px-3 py-2">
                    Label
                  </th>
                  <th scope="col" className="px-3 py-2">
                    Used
                  </th>
                  <th scope="col" className="px-3 py-2">
                    Expires
                  </th>
                  <th scope="col" className="px-3 py-2">
                    Status
                  </th>
                  <th scope="col" className="px-3 py-2">
                    <span className="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody className="divide-y divide-slate-200 bg-white dark:divide-slate-800 dark:bg-slate-950">
                {tokens.data.map((t) => {
                  const status = t.revokedAt
                    ? "revoked"
                    : t.usable
                      ? "usable"
                      : t.uses >= t.maxUses
                        ? "used up"
                        : "expired";
                  const name = t.label ?? `token for ${fleetName.get(t.fleetId) ?? "a fleet"}`;
                  return (
                    <tr key={t.id} data-testid="token-row">
                      <td className="px-3 py-2">
                        {fleetName.get(t.fleetId) ?? "(destroyed fleet)"}
                      </td>
                      <td className="px-3 py-2">
                        {t.label ?? <span className="text-slate-500 dark:text-slate-400">—</span>}
                      </td>
                      <td className="px-3 py-2 tabular-nums">
                        {t.uses} / {t.maxUses}
                      </td>
                      <td className="px-3 py-2">
                        <When at={t.expiresAt} />
                      </td>
                      <td className="px-3 py-2" data-testid="token-status">
                        {status}
                      </td>
                      <td className="px-3 py-2">
                        {t.usable && (
                          <ConfirmButton
                            label="Revoke"
                            accessibleLabel={`Revoke ${name}`}
                            question="Revoke? Machines already enrolled keep working."
                            confirmLabel="Revoke token"
                            danger
                            pending={revoke.isPending}
                            onConfirm={() => revoke.mutate({ id: t.id })}
                          />
                        )}
                        {revoke.variables?.id === t.id && <ErrorMessage error={revoke.error} />}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        )}
      </section>
    </div>
  );
}
