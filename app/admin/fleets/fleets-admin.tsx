"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useTRPC, useTRPCClient } from "@/app/providers";
import { FleetHoldExtension } from "./fleet-hold-extension";
import { FleetRecovery } from "./fleet-recovery";
import { FleetRecurring } from "./fleet-recurring";
import { FleetSchedules } from "./fleet-schedules";
import { FleetWarmPool, NextChangeLine } from "./fleet-warm-pool";
import { FleetWorkArchive } from "./fleet-work-archive";
import { OperationLog } from "./operation-log";

type FieldErrors = { path: string; message: string }[] | undefined;
const inputClass =
  "w-full rounded border border-slate-300 px-3 py-2 dark:border-slate-700 dark:bg-slate-950";

function FieldError({ errors, path }: { errors: FieldErrors; path: string }) {
  const e = errors?.find((x) => x.path === path);
  return e ? (
    <p className="mt-1 text-sm text-red-700 dark:text-red-300" id={`err-${path}`}>
      {e.message}
    </p>
  ) : null;
}

/** A labelled optional text field with its help line and the server's message for it. */
function OptionalField(props: {
  id: string;
  label: string;
  path: string;
  help: string;
  value: string;
  onChange: (value: string) => void;
  errors: FieldErrors;
  placeholder?: string;
  multiline?: boolean;
  /** A number of hours or minutes (any step, not negative) instead of text. */
  numeric?: boolean;
}) {
  const common = {
    id: props.id,
    value: props.value,
    placeholder: props.placeholder,
    className: inputClass,
    "aria-describedby": `${props.id}-help err-${props.path}`,
  };
  const numeric = props.numeric ? ({ type: "number", min: 0, step: "any" } as const) : {};
  return (
    <div className={props.multiline ? "sm:col-span-2" : undefined}>
      <label htmlFor={props.id} className="mb-1 block font-medium">
        {props.label}
      </label>
      {props.multiline ? (
        <textarea {...common} rows={4} onChange={(e) => props.onChange(e.target.value)} />
      ) : (
        <input {...common} {...numeric} onChange={(e) => props.onChange(e.target.value)} />
      )}
      <p id={`${props.id}-help`} className="mt-1 text-slate-600 dark:text-slate-400">
        {props.help}
      </p>
      <FieldError errors={props.errors} path={props.path} />
    </div>
  );
}

const holdText = (minutes: number | null) =>
  minutes === null ? "none" : minutes >= 60 ? `${minutes / 60} h` : `${minutes} min`;

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

/** How each per-fleet limit is edited: its unit in the form, its field, what the answer means. */
const LIMITS = {
  hold: {
    title: "hold limit",
    unit: "hours",
    perMinute: 1 / 60,
    path: "maxHoldMinutes",
    help: "Empty: no limit. It applies to current holds too.",
    saved: (minutes: number | null) => `hold limit ${holdText(minutes)}`,
    past: (n: number) =>
      `${plural(n, "researcher has", "researchers have")} held a VM longer than this; those holds end within a minute.`,
  },
  idle: {
    title: "idle limit",
    unit: "minutes",
    perMinute: 1,
    path: "idleReleaseMinutes",
    help: "Empty: never. A held VM that nothing uses (no session, research process or GPU work) for this long is released. It applies to current holds too.",
    saved: (minutes: number | null) =>
      minutes === null
        ? "idle VMs are not released"
        : `idle VMs released after ${holdText(minutes)}`,
    past: (n: number) =>
      `${plural(n, "held VM is", "held VMs are")} already idle longer than this; they are released within a minute.`,
  },
  quota: {
    title: "GPU-hour quota",
    unit: "GPU-hours per researcher per week",
    perMinute: 1,
    path: "gpuHoursPerWeek",
    help: "Empty: no quota. Each researcher may use this many GPU-hours (hours held × GPUs per VM) of this fleet in any 7 days; claims over it are refused, current holds go on.",
    saved: (value: number | null) =>
      value === null ? "no quota" : `${value} GPU-hours per researcher per week`,
    past: (_n: number) => "",
  },
  download: {
    title: "work download limit",
    unit: "GiB",
    perMinute: 1 / 1024,
    path: "maxMib",
    help: "The largest work folder (before compression) a researcher may download from My VM. Empty or 0: downloads off.",
    saved: (mib: number | null) => `work download limit ${downloadText(mib ?? 0)}`,
    past: (_n: number) => "",
  },
} as const;

const downloadText = (mib: number) =>
  mib === 0 ? "off" : mib % 1024 === 0 ? `${mib / 1024} GiB` : `${mib} MiB`;

/**
 * Changes one of an existing fleet's limits: the hold limit or the idle limit. Both apply to
 * current holds too, so the answer says how many are already past the new limit (the next sweep,
 * within 30 s, ends them).
 */
function LimitEditor(props: {
  kind: keyof typeof LIMITS;
  fleet: { id: string; name: string; minutes: number | null };
  onSaved: () => void;
}) {
  const client = useTRPCClient();
  const { fleet, kind } = props;
  const ui = LIMITS[kind];
  const [value, setValue] = useState(
    fleet.minutes === null ? "" : String(fleet.minutes * ui.perMinute),
  );
  const save = useMutation({
    mutationFn: async (minutes: number | null) => {
      if (kind === "quota") {
        const r = await client.fleet.setQuota.mutate({
          fleetId: fleet.id,
          gpuHoursPerWeek: minutes,
        });
        return { minutes: r.gpuHoursPerWeek, holdsPastLimit: 0 };
      }
      if (kind === "download") {
        const r = await client.fleet.setWorkDownloadLimit.mutate({
          fleetId: fleet.id,
          maxMib: minutes ?? 0,
        });
        return { minutes: r.maxMib, holdsPastLimit: 0 };
      }
      if (kind === "hold") {
        const r = await client.fleet.setHoldLimit.mutate({
          fleetId: fleet.id,
          maxHoldMinutes: minutes,
        });
        return { minutes: r.maxHoldMinutes, holdsPastLimit: r.holdsPastLimit };
      }
      const r = await client.fleet.setIdleLimit.mutate({
        fleetId: fleet.id,
        idleReleaseMinutes: minutes,
      });
      return { minutes: r.idleReleaseMinutes, holdsPastLimit: r.holdsPastLimit };
    },
    onSuccess: () => props.onSaved(),
  });
  const id = `${kind}-edit-${fleet.id}`;
  const error = save.error as { message: string; data?: { fieldErrors?: FieldErrors } } | null;
  const fieldError = error?.data?.fieldErrors?.find((e) => e.path === ui.path);
  const title = ui.title[0]?.toUpperCase() + ui.title.slice(1);
  return (
    <details className="text-sm">
      <summary className="cursor-pointer">Change {ui.title}</summary>
      <form
        className="mt-2 flex flex-wrap items-end gap-2"
        onSubmit={(e) => {
          e.preventDefault();
          save.mutate(value.trim() ? Math.round(Number(value) / ui.perMinute) : null);
        }}
      >
        <div>
          <label htmlFor={id} className="mb-1 block">
            New {ui.title} for {fleet.name} ({ui.unit})
          </label>
          <input
            id={id}
            type="number"
            step="any"
            value={value}
            placeholder={
              { hold: "no limit", idle: "never", quota: "no quota", download: "off" }[kind]
            }
            onChange={(e) => setValue(e.target.value)}
            aria-describedby={`${id}-help`}
            className="w-28 rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-950"
          />
        </div>
        <button type="submit" disabled={save.isPending} className="rounded border px-2 py-1">
          Save {ui.title}
        </button>
        <p id={`${id}-help`} className="w-full text-slate-600 dark:text-slate-400">
          {ui.help}
        </p>
        {error && (
          <p role="alert" className="w-full text-red-700 dark:text-red-300">
            {fieldError ? `${title} ${fieldError.message}.` : error.message}
          </p>
        )}
        {save.isSuccess && (
          <p role="status" className="w-full" data-testid={`${kind}-limit-saved`}>
            Saved: {ui.saved(save.data.minutes)}.
            {save.data.holdsPastLimit > 0 && ` ${ui.past(save.data.holdsPastLimit)}`}
          </p>
        )}
      </form>
    </details>
  );
}

export function FleetsAdmin() {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const fleets = useQuery({ ...trpc.fleet.list.queryOptions(), refetchInterval: 3_000 });
  const [op, setOp] = useState<{ id: string; title: string } | null>(null);
  const [form, setForm] = useState({
    name: "",
    driver: "local" as "local" | "terraform" | "byo",
    instanceType: "local.sim",
    gpuModel: "",
    gpuCount: 1,
    size: 2,
    /** Hours a researcher may hold a VM; empty: no limit. */
    holdHours: "",
    idleMinutes: "",
    quota: "",
    region: "us-west-2",
    image: "",
    ami: "",
    tutorialRepo: "",
    startupScript: "",
    sshUser: "",
    groupIds: [] as string[],
    rootForResearchers: false,
    clientImageCompat: false,
    subjectSoftware: "",
  });
  const groups = useQuery(trpc.group.list.queryOptions());
  const [sizes, setSizes] = useState<Record<string, number>>({});
  const [destroying, setDestroying] = useState<{ id: string; name: string } | null>(null);
  const [typed, setTyped] = useState("");
  const refresh = () => queryClient.invalidateQueries();
  /** What a bring-your-own fleet change did (no operation): a new token is shown this once. */
  const [byoResult, setByoResult] = useState<{
    fleetName: string;
    token?: { token: string; maxUses: number; expiresAt: Date };
    message: string;
  } | null>(null);

  const create = useMutation(
    trpc.fleet.create.mutationOptions({
      onSuccess: (r) => {
        setByoResult(null);
        if (r.operation) setOp({ id: r.operation.id, title: `Create ${form.name}` });
        else
          setByoResult({
            fleetName: form.name,
            token: r.enrollment ?? undefined,
            message: `Fleet ${form.name} created.`,
          });
        return refresh();
      },
    }),
  );
  const scale = useMutation(
    trpc.fleet.scale.mutationOptions({
      onSuccess: (r, input) => {
        setByoResult(null);
        if (r.operation) setOp({ id: r.operation.id, title: "Scale" });
        else {
          const name = fleets.data?.find((f) => f.id === input.fleetId)?.name ?? "";
          const retired = "retiredUses" in r ? r.retiredUses : 0;
          setByoResult({
            fleetName: name,
            token: r.enrollment ?? undefined,
            message: r.enrollment
              ? `${name} now expects ${input.size} machine(s).`
              : retired > 0
                ? `${name} now expects ${input.size} machine(s): ${plural(retired, "unused enrollment was", "unused enrollments were")} retired. Enrolled machines stay until you remove them.`
                : `${name} now expects ${input.size} machine(s); its open enrollment already covers them.`,
          });
        }
        return refresh();
      },
    }),
  );
  const destroy = useMutation(
    trpc.fleet.destroy.mutationOptions({
      onSuccess: (r) => {
        setByoResult(null);
        if (r.operation) setOp({ id: r.operation.id, title: `Destroy ${destroying?.name ?? ""}` });
        else
          setByoResult({
            fleetName: destroying?.name ?? "",
            message: `Fleet ${destroying?.name ?? ""} destroyed: ${plural(r.machinesStopped, "machine was", "machines were")} told to stop and no machine can enroll in it any more.`,
          });
        setDestroying(null);
        setTyped("");
        return refresh();
      },
    }),
  );
  const fieldErrors = create.error?.data?.fieldErrors as FieldErrors;

  return (
    <div className="space-y-6">
      <h1 className="text-2xl font-semibold">Fleets</h1>
      {op && <OperationLog key={op.id} operationId={op.id} title={op.title} />}
      {byoResult && (
        <div
          role="status"
          data-testid="byo-result"
          className="space-y-2 rounded-lg border border-slate-200 bg-white p-4 text-sm dark:border-slate-800 dark:bg-slate-900"
        >
          <p>{byoResult.message}</p>
          {byoResult.token && (
            <>
              <p>
                Enrollment token for {plural(byoResult.token.maxUses, "machine", "machines")} of{" "}
                {byoResult.fleetName}, valid until{" "}
                {new Date(byoResult.token.expiresAt).toLocaleString()}. It is shown only now: copy
                it into each machine's agent (<code>LABLINK_ENROLLMENT_TOKEN</code>, see{" "}
                <a href="/admin/enrollment" className="underline">
                  Enrollment
                </a>
                ).
              </p>
              <code
                data-testid="byo-token"
                className="block break-all rounded bg-slate-100 p-2 dark:bg-slate-800"
              >
                {byoResult.token.token}
              </code>
            </>
          )}
        </div>
      )}

      <section aria-labelledby="fleets-heading" className="space-y-3">
        <h2 id="fleets-heading" className="text-lg font-semibold">
          Current fleets
        </h2>
        {fleets.data?.length === 0 && <p className="text-sm text-slate-500">No fleets yet.</p>}
        <ul className="grid gap-3 md:grid-cols-2">
          {fleets.data?.map((f) => (
            <li
              key={f.id}
              data-testid="fleet-card"
              className="space-y-2 rounded-lg border border-slate-200 bg-white p-4 text-sm dark:border-slate-800 dark:bg-slate-900"
            >
              <p className="font-medium">
                {f.name}{" "}
                <span className="text-slate-500">
                  ({f.driver}, {f.status})
                </span>
                {f.rootForResearchers && (
                  <span
                    data-testid="fleet-root-mark"
                    title="Researchers have sudo and docker on these VMs; released VMs are replaced, not wiped."
                    className="ml-2 rounded bg-amber-100 px-1.5 py-0.5 text-xs font-medium text-amber-900 dark:bg-amber-900 dark:text-amber-100"
                  >
                    root for researchers
                  </span>
                )}
                {f.clientImageCompat && (
                  <span
                    data-testid="fleet-client-image-mark"
                    title="Original LabLink client images, served through the original client API."
                    className="ml-2 rounded bg-sky-100 px-1.5 py-0.5 text-xs font-medium text-sky-900 dark:bg-sky-900 dark:text-sky-100"
                  >
                    LabLink client image
                  </span>
                )}
              </p>
              <p data-testid="fleet-hold-limit">Hold limit: {holdText(f.maxHoldMinutes)}</p>
              <FleetHoldExtension fleet={f} editable={false} onSaved={refresh} part="summary" />
              <p data-testid="fleet-quota">
                GPU-hour quota:{" "}
                {f.gpuHoursPerWeek === null
                  ? "none"
                  : `${f.gpuHoursPerWeek} per researcher per week`}
              </p>
              <p data-testid="fleet-idle-limit">
                Idle release:{" "}
                {f.idleReleaseMinutes === null
                  ? "never"
                  : `after ${holdText(f.idleReleaseMinutes)} without use`}
              </p>
              <p data-testid="fleet-work-download">
                Work download limit: {downloadText(f.workDownloadMaxMib)}
              </p>
              <FleetWorkArchive
                fleet={f}
                editable={f.status !== "destroying" && f.status !== "destroyed"}
                onSaved={refresh}
              />
              {f.driver === "byo" && (
                <p data-testid="fleet-enrollment">
                  Machines:{" "}
                  {Object.entries(f.vmCounts)
                    .filter(([s]) => s !== "terminating")
                    .reduce((n, [, c]) => n + c, 0)}{" "}
                  enrolled of {f.desiredSize} expected ·{" "}
                  {plural(f.openEnrollments, "enrollment", "enrollments")} open
                </p>
              )}
              <FleetRecovery
                fleet={f}
                editable={f.status !== "destroying" && f.status !== "destroyed"}
                onSaved={refresh}
              />
              <p data-testid="fleet-counts">
                {Object.entries(f.vmCounts)
                  .map(([s, n]) => `${n} ${s}`)
                  .join(" · ") || "no VMs"}
              </p>
              {f.startupIssues > 0 && (
                <p
                  data-testid="fleet-startup-issues"
                  className="text-amber-800 dark:text-amber-300"
                >
                  The startup script failed on {f.startupIssues} VM
                  {f.startupIssues === 1 ? "" : "s"}: see the VM pages for its last output.
                </p>
              )}
              <div className="flex flex-wrap items-center gap-2">
                <label htmlFor={`size-${f.id}`}>
                  {f.driver === "byo" ? "Machines expected" : "Size"}
                </label>
                <input
                  id={`size-${f.id}`}
                  type="number"
                  min={0}
                  max={200}
                  value={sizes[f.id] ?? f.desiredSize}
                  onChange={(e) => setSizes({ ...sizes, [f.id]: Number(e.target.value) })}
                  className="w-20 rounded border border-slate-300 px-2 py-1 dark:border-slate-700 dark:bg-slate-950"
                />
                <button
                  type="button"
                  onClick={() =>
                    scale.mutate({ fleetId: f.id, size: sizes[f.id] ?? f.desiredSize })
                  }
                  className="rounded border px-2 py-1"
                >
                  Scale {f.name}
                </button>
                <button
                  type="button"
                  onClick={() => setDestroying({ id: f.id, name: f.name })}
                  className="rounded border border-red-700 px-2 py-1 text-red-700 dark:border-red-400 dark:text-red-300"
                >
                  Destroy {f.name}
                </button>
              </div>
              {f.status !== "destroying" && f.status !== "destroyed" && (
                <>
                  <LimitEditor
                    kind="hold"
                    fleet={{ id: f.id, name: f.name, minutes: f.maxHoldMinutes }}
                    onSaved={refresh}
                  />
                  <FleetHoldExtension fleet={f} editable onSaved={refresh} part="editor" />
                  <LimitEditor
                    kind="idle"
                    fleet={{ id: f.id, name: f.name, minutes: f.idleReleaseMinutes }}
                    onSaved={refresh}
                  />
                  <LimitEditor
                    kind="quota"
                    fleet={{ id: f.id, name: f.name, minutes: f.gpuHoursPerWeek }}
                    onSaved={refresh}
                  />
                  <LimitEditor
                    kind="download"
                    fleet={{ id: f.id, name: f.name, minutes: f.workDownloadMaxMib }}
                    onSaved={refresh}
                  />
                  {f.driver !== "byo" && (
                    <>
                      <FleetWarmPool fleet={f} />
                      <NextChangeLine next={f.nextChange} />
                      <FleetSchedules fleet={f} />
                      <FleetRecurring fleet={f} />
                    </>
                  )}
                </>
              )}
            </li>
          ))}
        </ul>
        {destroying && (
          <form
            onSubmit={(e) => {
              e.preventDefault();
              destroy.mutate({ fleetId: destroying.id });
            }}
            className="space-y-2 rounded border border-red-300 bg-red-50 p-3 text-sm dark:border-red-800 dark:bg-red-950"
          >
            <p>
              {fleets.data?.find((f) => f.id === destroying.id)?.driver === "byo" ? (
                <>
                  Destroying <strong>{destroying.name}</strong> takes every machine in it out of
                  LabLink, including ones researchers hold: their agents stop and no machine can
                  enroll again. The machines themselves keep running.
                </>
              ) : (
                <>
                  Destroying <strong>{destroying.name}</strong> terminates every VM in it, including
                  ones researchers hold.
                </>
              )}{" "}
              Type the fleet's name to confirm.
            </p>
            <label htmlFor="confirm-name" className="block">
              Fleet name
            </label>
            <input
              id="confirm-name"
              value={typed}
              onChange={(e) => setTyped(e.target.value)}
              className={inputClass}
              autoComplete="off"
            />
            <div className="flex gap-2">
              <button
                type="submit"
                disabled={typed !== destroying.name}
                className="rounded bg-red-700 px-3 py-1.5 font-medium text-white disabled:opacity-50"
              >
                Destroy fleet
              </button>
              <button
                type="button"
                onClick={() => setDestroying(null)}
                className="rounded border px-3 py-1.5"
              >
                Cancel
              </button>
            </div>
          </form>
        )}
        {(scale.isError || destroy.isError) && (
          <p role="alert" className="text-sm text-red-700 dark:text-red-300">
            {scale.error?.message ?? destroy.error?.message}
          </p>
        )}
      </section>

      <section aria-labelledby="create-heading" className="space-y-3">
        <h2 id="create-heading" className="text-lg font-semibold">
          Create a fleet
        </h2>
        <form
          className="grid gap-3 rounded-lg border border-slate-200 bg-white p-4 text-sm sm:grid-cols-2 dark:border-slate-800 dark:bg-slate-900"
          onSubmit={(e) => {
            e.preventDefault();
            const common = {
              name: form.name,
              instanceType: form.instanceType,
              gpuModel: form.gpuModel || undefined,
              gpuCount: form.gpuCount,
              size: form.size,
              maxHoldMinutes: form.holdHours.trim()
                ? Math.round(Number(form.holdHours) * 60)
                : null,
              idleReleaseMinutes: form.idleMinutes.trim()
                ? Math.round(Number(form.idleMinutes))
                : null,
              gpuHoursPerWeek: form.quota.trim() ? Number(form.quota) : null,
              groupIds: form.groupIds,
              rootForResearchers: form.rootForResearchers,
            };
            const config = {
              ...(form.ami.trim() ? { ami: form.ami.trim() } : {}),
              ...(form.tutorialRepo.trim() ? { tutorialRepo: form.tutorialRepo.trim() } : {}),
              ...(form.startupScript.trim() ? { startupScript: form.startupScript } : {}),
              ...(form.sshUser.trim() ? { sshUser: form.sshUser.trim() } : {}),
              ...(form.clientImageCompat && form.subjectSoftware.trim()
                ? { subjectSoftware: form.subjectSoftware.trim() }
                : {}),
            };
            create.mutate(
              form.driver === "local"
                ? { driver: "local", ...common }
                : form.driver === "byo"
                  ? { driver: "byo", ...common }
                  : {
                      driver: "terraform",
                      ...common,
                      region: form.region,
                      image: form.image,
                      clientImageCompat: form.clientImageCompat,
                      config,
                    },
            );
          }}
        >
          <div>
            <label htmlFor="fleet-name" className="mb-1 block font-medium">
              Name
            </label>
            <input
              id="fleet-name"
              required
              value={form.name}
              onChange={(e) => setForm({ ...form, name: e.target.value })}
              className={inputClass}
              aria-describedby="err-name"
            />
            <FieldError errors={fieldErrors} path="name" />
          </div>
          <div>
            <label htmlFor="fleet-driver" className="mb-1 block font-medium">
              Where
            </label>
            <select
              id="fleet-driver"
              value={form.driver}
              onChange={(e) =>
                setForm({ ...form, driver: e.target.value as "local" | "terraform" | "byo" })
              }
              className={inputClass}
            >
              <option value="local">This machine (simulated GPUs)</option>
              <option value="terraform">AWS EC2 through Terraform</option>
              <option value="byo">Bring your own machines (enrollment tokens)</option>
            </select>
          </div>
          <div>
            <label htmlFor="fleet-type" className="mb-1 block font-medium">
              Instance type
            </label>
            <input
              id="fleet-type"
              required
              value={form.instanceType}
              onChange={(e) => setForm({ ...form, instanceType: e.target.value })}
              className={inputClass}
            />
            <FieldError errors={fieldErrors} path="instanceType" />
          </div>
          <div>
            <label htmlFor="fleet-gpu" className="mb-1 block font-medium">
              GPU model
            </label>
            <input
              id="fleet-gpu"
              value={form.gpuModel}
              placeholder="NVIDIA A10G"
              onChange={(e) => setForm({ ...form, gpuModel: e.target.value })}
              className={inputClass}
            />
          </div>
          <div>
            <label htmlFor="fleet-gpus" className="mb-1 block font-medium">
              GPUs per VM
            </label>
            <input
              id="fleet-gpus"
              type="number"
              min={0}
              max={16}
              value={form.gpuCount}
              onChange={(e) => setForm({ ...form, gpuCount: Number(e.target.value) })}
              className={inputClass}
            />
          </div>
          <div>
            <label htmlFor="fleet-size" className="mb-1 block font-medium">
              VMs
            </label>
            <input
              id="fleet-size"
              type="number"
              min={0}
              max={200}
              value={form.size}
              onChange={(e) => setForm({ ...form, size: Number(e.target.value) })}
              className={inputClass}
            />
            <FieldError errors={fieldErrors} path="size" />
          </div>
          <OptionalField
            id="fleet-hold"
            label="Hold limit (hours)"
            path="maxHoldMinutes"
            help="A researcher's VM is released this long after they claim it. Empty: no limit."
            value={form.holdHours}
            onChange={(holdHours) => setForm({ ...form, holdHours })}
            errors={fieldErrors}
            placeholder="no limit"
            numeric
          />
          <OptionalField
            id="fleet-idle"
            label="Release idle VMs after (minutes)"
            path="idleReleaseMinutes"
            help="A held VM that nothing uses (no session, research process or GPU work) for this long is released. Empty: never."
            value={form.idleMinutes}
            onChange={(idleMinutes) => setForm({ ...form, idleMinutes })}
            errors={fieldErrors}
            placeholder="never"
            numeric
          />
          <OptionalField
            id="fleet-quota"
            label="GPU-hours per researcher per week"
            path="gpuHoursPerWeek"
            help="Each researcher may use this many GPU-hours (hours held × GPUs per VM) of this fleet in any 7 days; claims over it are refused. Empty: no quota."
            value={form.quota}
            onChange={(quota) => setForm({ ...form, quota })}
            errors={fieldErrors}
            placeholder="no quota"
            numeric
          />
          <div className="sm:col-span-2">
            <label className="flex items-center gap-2 font-medium">
              <input
                id="fleet-root"
                type="checkbox"
                checked={form.rootForResearchers}
                onChange={(e) => setForm({ ...form, rootForResearchers: e.target.checked })}
              />
              Root for researchers (sudo and docker)
            </label>
            <p className="text-xs text-slate-500">
              A researcher with root can defeat any wipe, so each released VM is terminated and
              replaced by a new one (slower and costlier than a wipe). Off: researchers get a plain
              account of their own, deleted on release.
            </p>
          </div>
          {form.driver === "terraform" && (
            <>
              <div>
                <label htmlFor="fleet-region" className="mb-1 block font-medium">
                  AWS region
                </label>
                <input
                  id="fleet-region"
                  value={form.region}
                  onChange={(e) => setForm({ ...form, region: e.target.value })}
                  className={inputClass}
                />
                <FieldError errors={fieldErrors} path="region" />
              </div>
              <div>
                <label htmlFor="fleet-image" className="mb-1 block font-medium">
                  Research container image
                </label>
                <input
                  id="fleet-image"
                  value={form.image}
                  onChange={(e) => setForm({ ...form, image: e.target.value })}
                  className={inputClass}
                />
                <FieldError errors={fieldErrors} path="image" />
              </div>
              <OptionalField
                id="fleet-ami"
                label="AMI (optional)"
                path="config.ami"
                placeholder="ami-0123456789abcdef0"
                help="Empty: the latest AWS Deep Learning GPU AMI for Ubuntu."
                value={form.ami}
                onChange={(ami) => setForm({ ...form, ami })}
                errors={fieldErrors}
              />
              <OptionalField
                id="fleet-ssh-user"
                label="Research user (optional)"
                path="config.sshUser"
                placeholder="ubuntu"
                help="The VM account researchers' SSH keys go to and the ssh command names. Empty: ubuntu."
                value={form.sshUser}
                onChange={(sshUser) => setForm({ ...form, sshUser })}
                errors={fieldErrors}
              />
              <OptionalField
                id="fleet-repo"
                label="Tutorial repository (optional)"
                path="config.tutorialRepo"
                placeholder="https://github.com/…"
                help="An https Git URL, cloned into the research container's /workspace."
                value={form.tutorialRepo}
                onChange={(tutorialRepo) => setForm({ ...form, tutorialRepo })}
                errors={fieldErrors}
              />
              <OptionalField
                id="fleet-script"
                label="Startup script (optional)"
                path="config.startupScript"
                help="Runs in the research container after the clone; its output appears in each VM's logs."
                value={form.startupScript}
                onChange={(startupScript) => setForm({ ...form, startupScript })}
                errors={fieldErrors}
                multiline
              />
              <div className="sm:col-span-2">
                <label className="flex items-center gap-2 font-medium">
                  <input
                    id="fleet-client-image"
                    type="checkbox"
                    checked={form.clientImageCompat}
                    onChange={(e) => setForm({ ...form, clientImageCompat: e.target.checked })}
                  />
                  LabLink client image compatibility
                </label>
                <p className="text-xs text-slate-500">
                  The image is an original LabLink client image: it starts with ALLOCATOR_URL,
                  API_TOKEN (each VM its own), VM_NAME, SUBJECT_SOFTWARE, TUTORIAL_REPO_TO_CLONE and
                  STARTUP_ON_ERROR and talks the original API; no LabLink agent runs beside it, and
                  released VMs are replaced (docs/original-api.md).
                </p>
              </div>
              {form.clientImageCompat && (
                <OptionalField
                  id="fleet-subject-software"
                  label="Subject software (optional)"
                  path="config.subjectSoftware"
                  placeholder="sleap"
                  help="SUBJECT_SOFTWARE for the client image."
                  value={form.subjectSoftware}
                  onChange={(subjectSoftware) => setForm({ ...form, subjectSoftware })}
                  errors={fieldErrors}
                />
              )}
            </>
          )}
          <fieldset className="sm:col-span-2">
            <legend className="mb-1 font-medium">Who may claim its VMs</legend>
            {groups.data?.length ? (
              <div className="flex flex-wrap gap-x-4 gap-y-1">
                {groups.data.map((g) => (
                  <label key={g.id} className="inline-flex items-center gap-2">
                    <input
                      type="checkbox"
                      checked={form.groupIds.includes(g.id)}
                      onChange={(e) =>
                        setForm({
                          ...form,
                          groupIds: e.target.checked
                            ? [...form.groupIds, g.id]
                            : form.groupIds.filter((x) => x !== g.id),
                        })
                      }
                    />
                    {g.name}
                  </label>
                ))}
              </div>
            ) : null}
            <p className="mt-1 text-slate-600 dark:text-slate-400">
              {form.groupIds.length
                ? "Only members of the ticked groups."
                : "Every researcher (tick groups to reserve the fleet for them; groups are managed on the Groups page)."}
            </p>
            <FieldError errors={fieldErrors} path="groupIds" />
          </fieldset>
          <div className="sm:col-span-2">
            <button
              type="submit"
              disabled={create.isPending}
              className="rounded bg-indigo-600 px-4 py-2 font-medium text-white hover:bg-indigo-700 disabled:opacity-60"
            >
              {create.isPending ? "Creating…" : "Create fleet"}
            </button>
            {create.isError && (
              <p role="alert" className="mt-2 text-sm text-red-700 dark:text-red-300">
                {fieldErrors?.length ? "Please fix the fields marked above." : create.error.message}
              </p>
            )}
          </div>
        </form>
      </section>
    </div>
  );
}
