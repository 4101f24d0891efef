"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import type { EndedHold } from "@/server/domain/hold-limits";
import { useTRPC } from "../providers";
import { Bookings } from "./bookings";
import { ConnectCrd } from "./connect-crd";
import { DesktopCard } from "./desktop-card";
import { GpuList } from "./gpu-list";
import { HoldTime, IdleRelease, SshCommand } from "./hold-and-ssh";
import { PoolSummary } from "./pool-summary";
import { WorkDownload } from "./work-download";

export function Portal() {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const mine = useQuery({ ...trpc.vm.mine.queryOptions(), refetchInterval: 3_000 });
  // Only without a VM: why the last one went, when that was not the researcher's doing.
  const lastEnded = useQuery({
    ...trpc.vm.lastEnded.queryOptions(),
    enabled: mine.isSuccess && mine.data === null,
  });
  const [confirming, setConfirming] = useState(false);
  const [choice, setChoice] = useState(ANY);
  const invalidate = () => queryClient.invalidateQueries();
  const claim = useMutation(trpc.vm.claim.mutationOptions({ onSuccess: invalidate }));
  const keepIdle = useMutation(trpc.vm.keepIdle.mutationOptions({ onSuccess: invalidate }));
  const extend = useMutation(trpc.vm.extend.mutationOptions({ onSuccess: invalidate }));
  const release = useMutation(
    trpc.vm.release.mutationOptions({
      onSuccess: () => {
        setConfirming(false);
        return invalidate();
      },
    }),
  );

  if (mine.isPending) return <p className="text-sm text-slate-500">Loading…</p>;
  if (mine.isError) return <p role="alert">Could not load your VM: {mine.error.message}</p>;
  const vm = mine.data;
  const canDownload =
    vm?.agentReady === true && (vm.state === "claimed" || vm.state === "draining");

  return (
    <div className="space-y-8">
      <section
        aria-labelledby="my-vm-heading"
        className="rounded-lg border border-slate-200 bg-white p-6 dark:border-slate-800 dark:bg-slate-900"
      >
        <h1 id="my-vm-heading" className="mb-4 text-2xl font-semibold">
          My VM
        </h1>
        {vm ? (
          <div className="space-y-4">
            {vm.recoveryNotice && (
              <p
                role="alert"
                data-testid="recovery-notice"
                className="rounded border border-amber-300 bg-amber-50 p-3 text-sm dark:border-amber-800 dark:bg-amber-950"
              >
                This VM is not working properly. LabLink will restart it at{" "}
                {new Date(vm.recoveryNotice.at).toLocaleTimeString([], { timeStyle: "short" })} to
                repair it: save your work now. It comes back to you afterwards.
              </p>
            )}
            {vm.state === "rebooting" && (
              <p data-testid="vm-rebooting" className="text-sm">
                Your VM is restarting; it comes back to you in a few minutes.
              </p>
            )}
            <dl className="grid grid-cols-[max-content_1fr] gap-x-6 gap-y-2 text-sm">
              <dt className="text-slate-500">Name</dt>
              <dd data-testid="vm-name" className="font-mono">
                {vm.name}
              </dd>
              <dt className="text-slate-500">State</dt>
              <dd data-testid="vm-state">{vm.state}</dd>
              <dt className="text-slate-500">Fleet</dt>
              <dd>
                {vm.fleet.name} · {vm.fleet.instanceType}
              </dd>
              <dt className="text-slate-500">Set up for you</dt>
              <dd data-testid="vm-agent-ready">{vm.agentReady ? "yes" : "waiting for the VM…"}</dd>
              <dt className="text-slate-500">Claimed</dt>
              <dd>{vm.claimedAt ? new Date(vm.claimedAt).toLocaleString() : "—"}</dd>
              <HoldTime
                claimedAt={vm.claimedAt}
                expiresAt={vm.holdExpiresAt}
                limitMinutes={vm.fleet.maxHoldMinutes}
                extension={vm.extension}
                extend={{
                  run: () => extend.mutate(),
                  pending: extend.isPending,
                  error: extend.isError ? extend.error.message : null,
                  done: extend.data
                    ? `Extended by ${extend.data.addedMinutes} min: now released at ${new Date(
                        extend.data.holdExpiresAt,
                      ).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}.`
                    : null,
                }}
              />
              <IdleRelease
                idleSince={vm.idleSince}
                releaseAt={vm.idleReleaseAt}
                limitMinutes={vm.fleet.idleReleaseMinutes}
                keep={{
                  run: () => keepIdle.mutate(),
                  pending: keepIdle.isPending,
                  error: keepIdle.isError ? keepIdle.error.message : null,
                }}
              />
            </dl>
            <GpuList gpus={vm.gpus} />
            {(vm.state === "claimed" || vm.state === "draining") && <DesktopCard vmId={vm.id} />}
            <SshCommand command={vm.ssh.command} />
            <ConnectCrd crd={vm.connection.crd} />
            {canDownload && <WorkDownload vmId={vm.id} />}
            {confirming ? (
              <div className="flex flex-wrap items-center gap-3 rounded border border-amber-300 bg-amber-50 p-3 text-sm dark:border-amber-800 dark:bg-amber-950">
                <span>Release this VM? Your files on it will be wiped.</span>
                {canDownload && (
                  <div className="w-full">
                    <p className="mb-1">Take your work along first:</p>
                    <WorkDownload vmId={vm.id} compact />
                  </div>
                )}
                <button
                  type="button"
                  onClick={() => release.mutate()}
                  disabled={release.isPending}
                  className="rounded bg-red-700 px-3 py-1.5 font-medium text-white hover:bg-red-800 disabled:opacity-60"
                >
                  {release.isPending ? "Releasing…" : "Yes, release it"}
                </button>
                <button
                  type="button"
                  onClick={() => setConfirming(false)}
                  className="rounded border px-3 py-1.5"
                >
                  Keep it
                </button>
              </div>
            ) : (
              <button
                type="button"
                onClick={() => setConfirming(true)}
                className="rounded border border-red-700 px-4 py-2 text-sm font-medium text-red-700 hover:bg-red-50 dark:border-red-400 dark:text-red-300 dark:hover:bg-red-950"
              >
                Release VM
              </button>
            )}
            {release.isError && (
              <p role="alert" className="text-sm text-red-700">
                {release.error.message}
              </p>
            )}
          </div>
        ) : (
          <div className="space-y-3">
            {lastEnded.data && <EndedNotice ended={lastEnded.data} />}
            <p className="text-sm text-slate-600 dark:text-slate-400">You do not hold a VM.</p>
            <div className="flex flex-wrap items-end gap-3">
              <ClaimChoice value={choice} onChange={setChoice} />
              <button
                type="button"
                onClick={() => claim.mutate(claimInput(choice))}
                disabled={claim.isPending}
                className="rounded bg-indigo-600 px-4 py-2 font-medium text-white hover:bg-indigo-700 disabled:opacity-60"
              >
                {claim.isPending ? "Claiming…" : "Claim a GPU VM"}
              </button>
            </div>
            {claim.isError && (
              <p
                role="alert"
                data-testid="claim-error"
                className="text-sm text-red-700 dark:text-red-300"
              >
                {claim.error.message}
              </p>
            )}
          </div>
        )}
      </section>
      <Bookings holdsVm={!!vm} />
      <PoolSummary />
    </div>
  );
}

function EndedNotice({ ended }: { ended: EndedHold }) {
  const vm = ended.vmName ?? "your VM";
  const at = ended.at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const minutes = ended.limitMinutes;
  const limit =
    minutes === null ? "" : minutes % 60 === 0 ? ` of ${minutes / 60} h` : ` of ${minutes} min`;
  const why = {
    hold_expired: `Your hold on ${vm} ended at ${at}: the fleet's limit${limit} was reached.`,
    idle: `${vm} was released at ${at}: nothing had used it for the fleet's idle limit${limit}.`,
    force_release: `An admin released ${vm} at ${at}.`,
  }[ended.reason];
  return (
    <p
      role="status"
      data-testid="ended-notice"
      className="rounded border border-amber-300 bg-amber-50 px-3 py-2 text-sm text-amber-900 dark:border-amber-700 dark:bg-amber-950 dark:text-amber-100"
    >
      {why} Claim a VM to go on working.
    </p>
  );
}

const ANY = "any";

/** The claim's filter from the chosen option: a fleet (`fleet:<id>`), a GPU type (`type:<name>`), or any. */
function claimInput(choice: string): { fleetId?: string; instanceType?: string } {
  if (choice.startsWith("fleet:")) return { fleetId: choice.slice(6) };
  if (choice.startsWith("type:")) return { instanceType: choice.slice(5) };
  return {};
}

/**
 * What to claim: any VM (the default), a GPU type offered by several fleets, or one fleet, each
 * with what is ready now. Only fleets open to the researcher's groups are listed (pool.summary
 * shows a researcher just those).
 */
function ClaimChoice({ value, onChange }: { value: string; onChange: (v: string) => void }) {
  const trpc = useTRPC();
  const pool = useQuery({ ...trpc.pool.summary.queryOptions(), refetchInterval: 5_000 });
  const fleets = (pool.data?.fleets ?? []).filter((f) => f.total > 0);
  if (fleets.length < 2) return null;
  const types = new Map<string, { ready: number; fleets: number; gpu: string }>();
  for (const f of fleets) {
    const t = types.get(f.instanceType) ?? { ready: 0, fleets: 0, gpu: f.gpuModel ?? "" };
    types.set(f.instanceType, { ...t, ready: t.ready + f.ready, fleets: t.fleets + 1 });
  }
  const total = fleets.reduce((n, f) => n + f.ready, 0);
  const gpu = (model: string | null, count: number) =>
    model ? ` (${count > 1 ? `${count} × ` : ""}${model})` : "";
  return (
    <div>
      <label htmlFor="claim-choice" className="mb-1 block text-sm font-medium">
        What to claim
      </label>
      <select
        id="claim-choice"
        value={value}
        onChange={(e) => onChange(e.target.value)}
        className="rounded border border-slate-300 px-3 py-2 text-sm dark:border-slate-700 dark:bg-slate-950"
      >
        <option value={ANY}>Any GPU VM — {total} ready</option>
        {[...types]
          .filter(([, t]) => t.fleets > 1)
          .map(([type, t]) => (
            <option key={`type:${type}`} value={`type:${type}`}>
              Any {type}
              {t.gpu ? ` (${t.gpu})` : ""} — {t.ready} ready
            </option>
          ))}
        {fleets.map((f) => (
          <option key={f.fleetId} value={`fleet:${f.fleetId}`}>
            {f.name}: {f.instanceType}
            {gpu(f.gpuModel, f.gpuCount)} — {f.ready} ready
          </option>
        ))}
      </select>
    </div>
  );
}
