"use client";

import { useMutation } from "@tanstack/react-query";
import { useState } from "react";
import { useTRPCClient } from "@/app/providers";

type Archive = { bucket: string; prefix: string; region: string; retentionDays: number };

function archiveOf(raw: unknown): Archive | null {
  const a = raw as Partial<Archive> | null | undefined;
  return a?.bucket && a.prefix && a.region && a.retentionDays
    ? { bucket: a.bucket, prefix: a.prefix, region: a.region, retentionDays: a.retentionDays }
    : null;
}

/**
 * A fleet's work archive: where researchers' work folders go at release (S3), and for how long
 * their profile links to them (docs/operations.md, "Work archives on release").
 */
export function FleetWorkArchive(props: {
  fleet: { id: string; name: string; workArchive: unknown };
  editable: boolean;
  onSaved: () => void;
}) {
  const client = useTRPCClient();
  const current = archiveOf(props.fleet.workArchive);
  const [draft, setDraft] = useState({
    bucket: current?.bucket ?? "",
    prefix: current?.prefix ?? "lablink/work",
    region: current?.region ?? "us-west-2",
    days: String(current?.retentionDays ?? 14),
  });
  const save = useMutation({
    mutationFn: (archive: Archive | null) =>
      client.fleet.setWorkArchive.mutate({ fleetId: props.fleet.id, archive }),
    onSuccess: () => props.onSaved(),
  });
  const error = save.error as {
    message: string;
    data?: { fieldErrors?: { path: string; message: string }[] };
  } | null;
  const fieldError = error?.data?.fieldErrors?.[0];
  const id = (k: string) => `archive-${k}-${props.fleet.id}`;
  const input = (k: keyof typeof draft, label: string, type = "text") => (
    <div>
      <label htmlFor={id(k)} className="mb-1 block">
        {label}
      </label>
      <input
        id={id(k)}
        type={type}
        value={draft[k]}
        onChange={(e) => setDraft({ ...draft, [k]: e.target.value })}
        className="w-40 rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-950"
      />
    </div>
  );
  return (
    <>
      <p data-testid="fleet-work-archive">
        Work archive on release:{" "}
        {current
          ? `s3://${current.bucket}/${current.prefix}/ (${current.region}), kept ${current.retentionDays} days`
          : "off"}
      </p>
      {props.editable && (
        <details className="text-sm">
          <summary className="cursor-pointer">Change work archive</summary>
          <form
            className="mt-2 flex flex-wrap items-end gap-2"
            onSubmit={(e) => {
              e.preventDefault();
              save.mutate({
                bucket: draft.bucket.trim(),
                prefix: draft.prefix.trim().replace(/^\/+|\/+$/g, ""),
                region: draft.region.trim(),
                retentionDays: Number(draft.days),
              });
            }}
          >
            {input("bucket", "S3 bucket")}
            {input("prefix", "Key prefix")}
            {input("region", "Region")}
            {input("days", "Days kept", "number")}
            <button type="submit" disabled={save.isPending} className="rounded border px-2 py-1">
              Save work archive
            </button>
            {current && (
              <button
                type="button"
                disabled={save.isPending}
                onClick={() => save.mutate(null)}
                className="rounded border px-2 py-1"
              >
                Turn work archive off
              </button>
            )}
            <p className="w-full text-slate-600 dark:text-slate-400">
              Before a released VM is wiped, its agent uploads the holder&apos;s home folder to
              &lt;prefix&gt;/&lt;user id&gt;/&lt;assignment id&gt;.tar.gz; the researcher&apos;s
              profile links to it for the days kept. The web process needs S3 permissions for the
              prefix (docs/deploy-aws.md).
            </p>
            {error && (
              <p role="alert" className="w-full text-red-700 dark:text-red-300">
                {fieldError ? fieldError.message : error.message}
              </p>
            )}
            {save.isSuccess && (
              <p role="status" className="w-full" data-testid="archive-saved">
                Saved: work archive {save.data.archive ? "on" : "off"}.
              </p>
            )}
          </form>
        </details>
      )}
    </>
  );
}
