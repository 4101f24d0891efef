"use client";

import { useEffect, useState } from "react";
import { duration } from "./pool-text";

/** Under this much time left, My VM warns that the VM will be released. */
export const WARN_BEFORE_MS = 15 * 60_000;

/** The current time, ticking every `everyMs` (re-renders the clock, nothing else). */
function useNow(everyMs = 15_000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(t);
  }, [everyMs]);
  return now;
}

/** What "Extend" offers on this hold (vm.mine's `extension`); null: the fleet allows none. */
export type ExtensionOffer = {
  stepMinutes: number;
  left: number;
  used: number;
  maxTotalMinutes: number | null;
} | null;

/** Time held since the claim, and time left when the fleet has a hold limit. */
export function HoldTime({
  claimedAt,
  expiresAt,
  limitMinutes,
  extension,
  extend,
}: {
  claimedAt: Date | string | null;
  expiresAt: Date | string | null;
  limitMinutes: number | null;
  extension?: ExtensionOffer;
  /** "Extend": adds the fleet's step to the hold (vm.extend); the error is the refusal's reason. */
  extend?: { run: () => void; pending: boolean; error: string | null; done: string | null };
}) {
  const now = useNow();
  if (!claimedAt) return null;
  const held = now - new Date(claimedAt).getTime();
  const left = expiresAt ? new Date(expiresAt).getTime() - now : null;
  return (
    <>
      <dt className="text-slate-500 dark:text-slate-400">Held for</dt>
      <dd data-testid="time-held">{duration(held)}</dd>
      <dt className="text-slate-500 dark:text-slate-400">Time left</dt>
      <dd data-testid="time-left">
        {left === null ? (
          "no limit"
        ) : (
          <>
            {duration(left)}{" "}
            <span className="text-slate-500 dark:text-slate-400">
              (limit {duration((limitMinutes ?? 0) * 60_000)}
              {extension && extension.used > 0
                ? `, extended ${extension.used} time${extension.used === 1 ? "" : "s"}`
                : ""}
              , released at {clock(expiresAt as Date | string)})
            </span>
          </>
        )}
      </dd>
      {left !== null && extension && extend && (
        <>
          <dt className="text-slate-500 dark:text-slate-400">More time</dt>
          <dd data-testid="hold-extend" className="space-y-1">
            {extension.left > 0 ? (
              <div className="flex flex-wrap items-center gap-2">
                <button
                  type="button"
                  onClick={extend.run}
                  disabled={extend.pending || left <= 0}
                  className="rounded border border-indigo-700 px-3 py-1 font-medium text-indigo-700 hover:bg-indigo-50 disabled:opacity-60 dark:border-indigo-300 dark:text-indigo-300 dark:hover:bg-indigo-950"
                >
                  {extend.pending
                    ? "Extending…"
                    : `Extend by ${duration(extension.stepMinutes * 60_000)}`}
                </button>
                <span data-testid="extensions-left" className="text-slate-600 dark:text-slate-400">
                  {extension.left} extension{extension.left === 1 ? "" : "s"} left
                </span>
              </div>
            ) : (
              <span data-testid="extensions-left" className="text-slate-600 dark:text-slate-400">
                No extensions left ({extension.used} used
                {extension.maxTotalMinutes !== null
                  ? `; at most ${duration(extension.maxTotalMinutes * 60_000)} in all`
                  : ""}
                )
              </span>
            )}
            {extend.done && (
              <span
                role="status"
                data-testid="extend-done"
                className="block text-green-800 dark:text-green-300"
              >
                {extend.done}
              </span>
            )}
            {extend.error && (
              <span
                role="alert"
                data-testid="extend-error"
                className="block text-red-700 dark:text-red-300"
              >
                {extend.error}
              </span>
            )}
          </dd>
        </>
      )}
      {left !== null && left < WARN_BEFORE_MS && (
        <dd
          role="alert"
          data-testid="hold-warning"
          className="col-span-2 rounded border border-amber-300 bg-amber-50 p-2 text-amber-950 dark:border-amber-800 dark:bg-amber-950 dark:text-amber-100"
        >
          {left > 0
            ? `This VM will be released in ${duration(left)}: save your work and copy off what you need.`
            : "Your time on this VM is up: it is being released. Save what you can now."}
        </dd>
      )}
    </>
  );
}

const clock = (at: Date | string) =>
  new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

/**
 * The fleet's idle limit and, while the VM's agent reports it idle, when that releases it. Any
 * activity (a session, research-process or GPU work, input) stops the count.
 */
export function IdleRelease({
  idleSince,
  releaseAt,
  limitMinutes,
  keep,
}: {
  idleSince: Date | string | null;
  releaseAt: Date | string | null;
  limitMinutes: number | null;
  /** "I'm still using it": restarts the idle count (vm.keepIdle). */
  keep: { run: () => void; pending: boolean; error: string | null };
}) {
  const now = useNow();
  if (limitMinutes === null) return null;
  const left = releaseAt ? new Date(releaseAt).getTime() - now : null;
  return (
    <>
      <dt className="text-slate-500 dark:text-slate-400">Idle release</dt>
      <dd data-testid="idle-release">
        {left === null || !idleSince
          ? `after ${duration(limitMinutes * 60_000)} without use (not idle now)`
          : `idle since ${clock(idleSince)}; released at ${clock(releaseAt as Date | string)} unless you use it`}
      </dd>
      {left !== null && (
        <dd
          role={left < WARN_BEFORE_MS ? "alert" : "status"}
          data-testid="idle-warning"
          className="col-span-2 rounded border border-amber-300 bg-amber-50 p-2 text-amber-950 dark:border-amber-800 dark:bg-amber-950 dark:text-amber-100"
        >
          {left > 0
            ? `Nothing has used this VM for a while: it will be released in ${duration(left)} unless you connect or run something.`
            : "This VM has been idle past its fleet's limit: it is being released."}{" "}
          {left > 0 && (
            <button
              type="button"
              onClick={keep.run}
              disabled={keep.pending}
              className="ml-1 rounded border border-amber-700 px-2 py-0.5 font-medium hover:bg-amber-100 disabled:opacity-60 dark:border-amber-300 dark:hover:bg-amber-900"
            >
              {keep.pending ? "Keeping…" : "I'm still using it"}
            </button>
          )}
          {keep.error && (
            <span role="alert" className="mt-1 block text-red-700 dark:text-red-300">
              {keep.error}
            </span>
          )}
        </dd>
      )}
    </>
  );
}

/** The exact ssh command for the VM, with a copy button. */
export function SshCommand({ command }: { command: string | null }) {
  const [copied, setCopied] = useState<"yes" | "failed" | null>(null);
  return (
    <section
      aria-labelledby="ssh-heading"
      className="space-y-2 rounded border border-slate-200 p-4 dark:border-slate-800"
    >
      <h2 id="ssh-heading" className="font-semibold">
        Connect with SSH
      </h2>
      {command ? (
        <>
          <div className="flex flex-wrap items-center gap-2">
            <code
              data-testid="ssh-command"
              className="min-w-0 flex-1 overflow-x-auto rounded bg-slate-100 px-3 py-2 font-mono text-sm whitespace-nowrap dark:bg-slate-800"
            >
              {command}
            </code>
            <button
              type="button"
              onClick={() =>
                navigator.clipboard.writeText(command).then(
                  () => setCopied("yes"),
                  () => setCopied("failed"),
                )
              }
              className="rounded border border-slate-400 px-3 py-1.5 text-sm hover:bg-slate-100 dark:border-slate-600 dark:hover:bg-slate-800"
            >
              Copy
            </button>
            <span aria-live="polite" className="text-sm text-slate-600 dark:text-slate-400">
              {copied === "yes" ? "Copied." : copied === "failed" ? "Select and copy it." : ""}
            </span>
          </div>
          <p className="text-sm text-slate-600 dark:text-slate-400">
            Uses the SSH keys in your{" "}
            <a href="/profile" className="text-indigo-700 underline dark:text-indigo-300">
              profile
            </a>
            ; add one there first if you have none.
          </p>
        </>
      ) : (
        <p className="text-sm text-slate-600 dark:text-slate-400">
          The VM's address is not known yet; it appears here once the VM has started.
        </p>
      )}
    </section>
  );
}
