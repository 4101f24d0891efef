"use client";

import { useEffect, useRef, useState } from "react";

/** Shared look of the admin pages: inputs, buttons, panels, and the three states of any list. */
export const inputClass =
  "rounded border border-slate-300 bg-white px-2 py-1.5 text-sm dark:border-slate-700 dark:bg-slate-950";
export const buttonClass =
  "rounded border border-slate-400 px-3 py-1.5 text-sm hover:bg-slate-100 disabled:opacity-50 dark:border-slate-600 dark:hover:bg-slate-800";
export const primaryClass =
  "rounded bg-indigo-600 px-3 py-1.5 text-sm font-medium text-white hover:bg-indigo-700 disabled:opacity-60";
export const dangerClass =
  "rounded border border-red-700 px-3 py-1.5 text-sm text-red-700 hover:bg-red-50 disabled:opacity-50 dark:border-red-400 dark:text-red-300 dark:hover:bg-red-950";
export const panelClass =
  "rounded-lg border border-slate-200 bg-white p-4 dark:border-slate-800 dark:bg-slate-900";
// Underlined: links inside text must not rely on colour alone (axe link-in-text-block).
export const linkClass =
  "text-indigo-700 underline underline-offset-2 hover:text-indigo-900 dark:text-indigo-300 dark:hover:text-indigo-100";

type ErrorLike = {
  message: string;
  data?: { fieldErrors?: { path: string; message: string }[] | undefined } | null;
} | null;

/**
 * What the server said, for a person: field errors as "field: message" (a validation error's
 * own message is a JSON dump), otherwise the server's message. Never a stack trace.
 */
export function errorText(error: ErrorLike): string {
  if (!error) return "";
  const fields = error.data?.fieldErrors;
  if (fields?.length)
    return fields.map((f) => (f.path ? `${f.path}: ${f.message}` : f.message)).join("; ");
  return error.message;
}

export function ErrorMessage({ error, prefix }: { error: ErrorLike; prefix?: string }) {
  if (!error) return null;
  return (
    <p role="alert" className="text-sm text-red-700 dark:text-red-300">
      {prefix ? `${prefix}: ` : ""}
      {errorText(error)}
    </p>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p role="status" aria-live="polite" className="text-sm text-slate-500 dark:text-slate-400">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: React.ReactNode }) {
  return (
    <p className="rounded border border-dashed border-slate-300 p-4 text-sm text-slate-600 dark:border-slate-700 dark:text-slate-400">
      {children}
    </p>
  );
}

/**
 * A button that asks before acting: the first press shows the question with Confirm and Cancel
 * (focus moves to Confirm; Escape cancels).
 */
export function ConfirmButton({
  label,
  question,
  confirmLabel,
  onConfirm,
  pending,
  danger,
  accessibleLabel,
}: {
  label: string;
  question: React.ReactNode;
  confirmLabel: string;
  onConfirm: () => void;
  pending?: boolean;
  danger?: boolean;
  accessibleLabel?: string;
}) {
  const [asking, setAsking] = useState(false);
  const confirmRef = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (asking) confirmRef.current?.focus();
  }, [asking]);
  if (!asking) {
    return (
      <button
        type="button"
        aria-label={accessibleLabel}
        className={danger ? dangerClass : buttonClass}
        onClick={() => setAsking(true)}
      >
        {label}
      </button>
    );
  }
  return (
    <fieldset
      aria-label={accessibleLabel ?? label}
      className="m-0 inline-flex min-w-0 flex-wrap items-center gap-2 rounded border border-amber-300 bg-amber-50 px-2 py-1 text-sm dark:border-amber-800 dark:bg-amber-950"
      onKeyDown={(e) => {
        if (e.key === "Escape") setAsking(false);
      }}
    >
      <span>{question}</span>
      <button
        ref={confirmRef}
        type="button"
        disabled={pending}
        className={
          danger
            ? "rounded bg-red-700 px-2 py-1 font-medium text-white hover:bg-red-800 disabled:opacity-50"
            : "rounded bg-indigo-600 px-2 py-1 font-medium text-white hover:bg-indigo-700 disabled:opacity-50"
        }
        onClick={() => {
          onConfirm();
          setAsking(false);
        }}
      >
        {confirmLabel}
      </button>
      <button type="button" className={buttonClass} onClick={() => setAsking(false)}>
        Cancel
      </button>
    </fieldset>
  );
}

/** "3 min ago"-style age, with the exact time on hover. */
export function When({ at }: { at: Date | string | null | undefined }) {
  if (!at) return <span className="text-slate-500 dark:text-slate-400">—</span>;
  const d = typeof at === "string" ? new Date(at) : at;
  return (
    <time dateTime={d.toISOString()} title={d.toISOString()}>
      {d.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "medium" })}
    </time>
  );
}

const STATUS_CLASS: Record<string, string> = {
  queued: "bg-slate-100 text-slate-800 dark:bg-slate-800 dark:text-slate-200",
  running: "bg-blue-100 text-blue-900 dark:bg-blue-950 dark:text-blue-200",
  succeeded: "bg-green-100 text-green-900 dark:bg-green-950 dark:text-green-200",
  failed: "bg-red-100 text-red-900 dark:bg-red-950 dark:text-red-200",
  cancelled: "bg-amber-100 text-amber-900 dark:bg-amber-950 dark:text-amber-200",
  // Webhook deliveries.
  pending: "bg-slate-100 text-slate-800 dark:bg-slate-800 dark:text-slate-200",
  delivered: "bg-green-100 text-green-900 dark:bg-green-950 dark:text-green-200",
};

export function StatusBadge({ status }: { status: string }) {
  return (
    <span
      className={`inline-block rounded px-2 py-0.5 text-xs font-medium ${STATUS_CLASS[status] ?? STATUS_CLASS.queued}`}
    >
      {status}
    </span>
  );
}

/**
 * A list filter: a select with its own label (not wrapped in it, so the accessible name is the
 * label alone, not the label plus the chosen option) and a first "any" choice with value "".
 */
export function FilterSelect(props: {
  id: string;
  label: string;
  value: string;
  onChange: (value: string) => void;
  anyLabel: string;
  options: readonly (string | { value: string; label: string })[];
}) {
  return (
    <div className="flex flex-col gap-1 text-sm">
      <label htmlFor={props.id}>{props.label}</label>
      <select
        id={props.id}
        className={inputClass}
        value={props.value}
        onChange={(e) => props.onChange(e.target.value)}
      >
        <option value="">{props.anyLabel}</option>
        {props.options.map((o) => {
          const { value, label } = typeof o === "string" ? { value: o, label: o } : o;
          return (
            <option key={value} value={value}>
              {label}
            </option>
          );
        })}
      </select>
    </div>
  );
}

/**
 * Keyset paging through a list whose API answers `nextCursor`: the stack of cursors that led to
 * the current page (empty on the first), so "Newer" goes back one step and "Older" one further.
 */
export function useCursorPages<C>() {
  const [cursors, setCursors] = useState<C[]>([]);
  return {
    /** The cursor of the page to show (undefined: the first page). */
    cursor: cursors.at(-1),
    /** Back to the first page (filters changed). */
    reset: () => setCursors([]),
    newer: cursors.length > 0 ? () => setCursors(cursors.slice(0, -1)) : null,
    older: (next: C | null | undefined) => (next ? () => setCursors([...cursors, next]) : null),
  };
}

/** The "Newer" / "Older" buttons of a list paged with useCursorPages. */
export function CursorPager(props: { newer: (() => void) | null; older: (() => void) | null }) {
  return (
    <div className="flex gap-2">
      <button
        type="button"
        className={buttonClass}
        disabled={!props.newer}
        onClick={() => props.newer?.()}
      >
        Newer
      </button>
      <button
        type="button"
        className={buttonClass}
        disabled={!props.older}
        onClick={() => props.older?.()}
      >
        Older
      </button>
    </div>
  );
}
