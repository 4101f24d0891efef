"use client";

import { useMutation } from "@tanstack/react-query";
import { useState } from "react";
import { useTRPCClient } from "@/app/providers";
import { RECOVERY_POLICY_LABELS, type RecoveryPolicy } from "@/server/domain/recovery-policy";

const NUMBERS = (Object.keys(RECOVERY_POLICY_LABELS) as (keyof RecoveryPolicy)[]).filter(
  (k) => k !== "enabled",
) as Exclude<keyof RecoveryPolicy, "enabled">[];

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

/** One line an admin reads: what recovery watches for and what it will do. */
export function recoveryText(p: RecoveryPolicy): string {
  if (!p.enabled) return "off";
  return (
    `on: silent > ${p.silentMinutes} min, booting > ${p.stuckBootingMinutes} min, ` +
    `rebooting > ${p.stuckRebootingMinutes} min, unhealthy > ${p.unhealthyGraceMinutes} min → ` +
    `${plural(p.maxWarmReboots, "warm reboot", "warm reboots")}, ` +
    `${plural(p.maxColdReboots, "cold reboot", "cold reboots")}, ` +
    `${plural(p.maxReplacements, "replacement", "replacements")}, then failed; ` +
    `${p.cooldownMinutes} min between attempts; holders told ${p.holderNoticeMinutes} min before`
  );
}

/**
 * A fleet's automatic-recovery policy: the summary, how many VMs it is working on, and a form to
 * change it (docs/operations.md, "Automatic recovery").
 */
export function FleetRecovery(props: {
  fleet: { id: string; name: string; recovery: RecoveryPolicy; recovering: number };
  editable: boolean;
  onSaved: () => void;
}) {
  const client = useTRPCClient();
  const { fleet } = props;
  const [draft, setDraft] = useState<RecoveryPolicy>(fleet.recovery);
  const save = useMutation({
    mutationFn: (policy: RecoveryPolicy) =>
      client.fleet.setRecoveryPolicy.mutate({ fleetId: fleet.id, policy }),
    onSuccess: () => props.onSaved(),
  });
  const error = save.error as {
    message: string;
    data?: { fieldErrors?: { path: string; message: string }[] };
  } | null;
  const fieldError = error?.data?.fieldErrors?.[0];
  const fieldName = fieldError?.path.split(".").at(-1) as keyof RecoveryPolicy | undefined;
  return (
    <>
      <p data-testid="fleet-recovery">
        Automatic recovery: {recoveryText(fleet.recovery)}
        {fleet.recovering > 0 && (
          <span data-testid="fleet-recovering" className="ml-2 font-medium">
            ({plural(fleet.recovering, "VM", "VMs")} under recovery)
          </span>
        )}
      </p>
      {props.editable && (
        <details className="text-sm">
          <summary className="cursor-pointer">Change automatic recovery</summary>
          <form
            className="mt-2 grid grid-cols-2 gap-2 sm:grid-cols-3"
            onSubmit={(e) => {
              e.preventDefault();
              save.mutate(draft);
            }}
          >
            <label className="col-span-full flex items-center gap-2">
              <input
                type="checkbox"
                checked={draft.enabled}
                onChange={(e) => setDraft({ ...draft, enabled: e.target.checked })}
              />
              {RECOVERY_POLICY_LABELS.enabled} for {fleet.name}
            </label>
            {NUMBERS.map((key) => (
              <div key={key}>
                <label htmlFor={`recovery-${key}-${fleet.id}`} className="mb-1 block">
                  {RECOVERY_POLICY_LABELS[key]}
                </label>
                <input
                  id={`recovery-${key}-${fleet.id}`}
                  type="number"
                  min={0}
                  value={draft[key]}
                  onChange={(e) => setDraft({ ...draft, [key]: Number(e.target.value) })}
                  className="w-24 rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-950"
                />
              </div>
            ))}
            <button
              type="submit"
              disabled={save.isPending}
              className="col-span-full w-fit rounded border px-2 py-1"
            >
              Save recovery policy
            </button>
            {error && (
              <p role="alert" className="col-span-full text-red-700 dark:text-red-300">
                {fieldError && fieldName && fieldName in RECOVERY_POLICY_LABELS
                  ? `${RECOVERY_POLICY_LABELS[fieldName]}: ${fieldError.message}.`
                  : error.message}
              </p>
            )}
            {save.isSuccess && (
              <p role="status" className="col-span-full" data-testid="recovery-policy-saved">
                Saved: automatic recovery {recoveryText(save.data)}.
              </p>
            )}
          </form>
        </details>
      )}
    </>
  );
}
