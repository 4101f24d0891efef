"use client";

import { useMutation } from "@tanstack/react-query";
import { useState } from "react";
import { useTRPCClient } from "@/app/providers";

type Rules = { stepMinutes: number; maxExtensions: number; maxTotalMinutes: number | null };

const minutesText = (m: number) => (m % 60 === 0 ? `${m / 60} h` : `${m} min`);

/** One line an admin reads: how researchers may extend a hold on this fleet. */
export function extensionText(fleet: {
  maxHoldMinutes: number | null;
  holdExtendMinutes: number | null;
  maxHoldExtensions: number;
  maxTotalHoldMinutes: number | null;
}): string {
  if (fleet.holdExtendMinutes === null || fleet.maxHoldExtensions <= 0) return "none";
  const rule =
    `${fleet.maxHoldExtensions} × ${minutesText(fleet.holdExtendMinutes)}` +
    (fleet.maxTotalHoldMinutes === null
      ? ""
      : `, at most ${minutesText(fleet.maxTotalHoldMinutes)} in all`);
  return fleet.maxHoldMinutes === null ? `${rule} (no effect: the fleet has no hold limit)` : rule;
}

/**
 * The fleet's rules for "Extend" on My VM (docs/operations.md, "Extending a hold"): minutes per
 * extension, extensions per hold, the longest a hold may last. Empty minutes: no extensions.
 */
export function FleetHoldExtension(props: {
  fleet: {
    id: string;
    name: string;
    maxHoldMinutes: number | null;
    holdExtendMinutes: number | null;
    maxHoldExtensions: number;
    maxTotalHoldMinutes: number | null;
  };
  editable: boolean;
  onSaved: () => void;
  /** The card's summary line, or the editor (placed with the card's other limit editors). */
  part: "summary" | "editor";
}) {
  const client = useTRPCClient();
  const { fleet } = props;
  const [step, setStep] = useState(fleet.holdExtendMinutes?.toString() ?? "");
  const [count, setCount] = useState(String(fleet.maxHoldExtensions || 2));
  const [total, setTotal] = useState(
    fleet.maxTotalHoldMinutes === null ? "" : String(fleet.maxTotalHoldMinutes / 60),
  );
  const save = useMutation({
    mutationFn: (rules: Rules | null) =>
      client.fleet.setHoldExtension.mutate({ fleetId: fleet.id, rules }),
    onSuccess: () => props.onSaved(),
  });
  const id = `extend-${fleet.id}`;
  const input =
    "w-24 rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-950";
  if (props.part === "summary")
    return <p data-testid="fleet-hold-extension">Hold extensions: {extensionText(fleet)}</p>;
  return (
    <>
      {props.editable && (
        <details className="text-sm">
          <summary className="cursor-pointer">Change hold extensions</summary>
          <form
            className="mt-2 flex flex-wrap items-end gap-2"
            onSubmit={(e) => {
              e.preventDefault();
              save.mutate(
                step.trim()
                  ? {
                      stepMinutes: Math.round(Number(step)),
                      maxExtensions: Math.round(Number(count)),
                      maxTotalMinutes: total.trim() ? Math.round(Number(total) * 60) : null,
                    }
                  : null,
              );
            }}
          >
            <div>
              <label htmlFor={`${id}-step`} className="mb-1 block">
                Minutes per extension
              </label>
              <input
                id={`${id}-step`}
                type="number"
                value={step}
                placeholder="none"
                onChange={(e) => setStep(e.target.value)}
                className={input}
              />
            </div>
            <div>
              <label htmlFor={`${id}-count`} className="mb-1 block">
                Extensions per hold
              </label>
              <input
                id={`${id}-count`}
                type="number"
                value={count}
                onChange={(e) => setCount(e.target.value)}
                className={input}
              />
            </div>
            <div>
              <label htmlFor={`${id}-total`} className="mb-1 block">
                Longest hold in all (hours)
              </label>
              <input
                id={`${id}-total`}
                type="number"
                step="any"
                value={total}
                placeholder="no cap"
                onChange={(e) => setTotal(e.target.value)}
                className={input}
              />
            </div>
            <button type="submit" disabled={save.isPending} className="rounded border px-2 py-1">
              Save hold extensions
            </button>
            <p className="w-full text-slate-600 dark:text-slate-400">
              Empty minutes: holds on {fleet.name} cannot be extended. Needs a hold limit. An
              extension is refused while someone waits for a VM of this fleet or when it would
              exceed the researcher's GPU-hour quota.
            </p>
            {save.error && (
              <p role="alert" className="w-full text-red-700 dark:text-red-300">
                {save.error.message}
              </p>
            )}
            {save.isSuccess && (
              <p role="status" className="w-full" data-testid="hold-extension-saved">
                Saved: hold extensions{" "}
                {save.data.rules
                  ? extensionText({
                      maxHoldMinutes: fleet.maxHoldMinutes,
                      holdExtendMinutes: save.data.rules.stepMinutes,
                      maxHoldExtensions: save.data.rules.maxExtensions,
                      maxTotalHoldMinutes: save.data.rules.maxTotalMinutes,
                    })
                  : "none"}
                .
              </p>
            )}
          </form>
        </details>
      )}
    </>
  );
}
