"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useTRPC } from "@/app/providers";
import {
  WEBHOOK_EVENT_TYPES,
  WEBHOOK_EVENTS,
  type WebhookEventType,
} from "@/server/domain/webhook-event-types";
import {
  buttonClass,
  ConfirmButton,
  Empty,
  ErrorMessage,
  inputClass,
  Loading,
  panelClass,
  primaryClass,
  StatusBadge,
  When,
} from "../ui";

export function WebhooksAdmin() {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const refresh = () => queryClient.invalidateQueries();
  const hooks = useQuery({ ...trpc.webhook.list.queryOptions(), refetchOnMount: "always" });
  const [url, setUrl] = useState("");
  const [format, setFormat] = useState<"lablink" | "slack">("lablink");
  const [events, setEvents] = useState<WebhookEventType[]>([]);
  const [secret, setSecret] = useState<string | null>(null);
  const [openId, setOpenId] = useState<string | null>(null);
  const create = useMutation(
    trpc.webhook.create.mutationOptions({
      onSuccess: (r) => {
        setUrl("");
        setEvents([]);
        setSecret(r.secret);
        return refresh();
      },
    }),
  );
  const update = useMutation(trpc.webhook.update.mutationOptions({ onSettled: refresh }));
  const remove = useMutation(trpc.webhook.delete.mutationOptions({ onSettled: refresh }));
  const test = useMutation(
    trpc.webhook.test.mutationOptions({
      onSuccess: (_r, v) => {
        setOpenId(v.id);
        return refresh();
      },
    }),
  );

  return (
    <div className="space-y-6">
      <h1 className="text-2xl font-semibold">Webhooks</h1>
      <p className="text-sm text-slate-600 dark:text-slate-400">
        LabLink POSTs the events you choose to your HTTPS endpoints, signed with the webhook's
        secret (header <code>X-LabLink-Signature</code>), and retries with backoff when they fail.
        Slack format sends <code>{"{ text }"}</code> for a Slack incoming webhook. See
        docs/operations.md, "Webhooks".
      </p>

      <form
        aria-labelledby="new-webhook-heading"
        className={`space-y-3 ${panelClass}`}
        onSubmit={(e) => {
          e.preventDefault();
          setSecret(null);
          create.mutate({ url, events, format });
        }}
      >
        <h2 id="new-webhook-heading" className="text-lg font-semibold">
          New webhook
        </h2>
        <div className="flex flex-wrap items-end gap-3">
          <label className="flex grow flex-col gap-1 text-sm">
            Endpoint URL (https://)
            <input
              className={inputClass}
              type="url"
              value={url}
              maxLength={2000}
              required
              placeholder="https://hooks.example.edu/lablink"
              onChange={(e) => setUrl(e.target.value)}
            />
          </label>
          <label className="flex flex-col gap-1 text-sm">
            Format
            <select
              className={inputClass}
              value={format}
              onChange={(e) => setFormat(e.target.value as "lablink" | "slack")}
            >
              <option value="lablink">LabLink JSON</option>
              <option value="slack">Slack</option>
            </select>
          </label>
        </div>
        <fieldset className="space-y-1 text-sm">
          <legend className="font-medium">Events</legend>
          {WEBHOOK_EVENT_TYPES.map((ev) => (
            <label key={ev} className="flex items-center gap-2">
              <input
                type="checkbox"
                checked={events.includes(ev)}
                onChange={(e) =>
                  setEvents(e.target.checked ? [...events, ev] : events.filter((x) => x !== ev))
                }
              />
              {WEBHOOK_EVENTS[ev]} <code className="text-xs text-slate-500">{ev}</code>
            </label>
          ))}
        </fieldset>
        <button
          type="submit"
          className={primaryClass}
          disabled={create.isPending || events.length === 0}
        >
          Add webhook
        </button>
        <ErrorMessage error={create.error} prefix="Could not add the webhook" />
        {secret && (
          <div
            role="status"
            className="rounded border border-amber-300 bg-amber-50 p-3 text-sm dark:border-amber-800 dark:bg-amber-950"
          >
            <p className="font-medium">Signing secret (shown only now: copy it to your receiver)</p>
            <code data-testid="webhook-secret" className="break-all">
              {secret}
            </code>
          </div>
        )}
      </form>

      <section aria-labelledby="webhooks-heading" className="space-y-3">
        <h2 id="webhooks-heading" className="text-lg font-semibold">
          Webhooks
        </h2>
        {hooks.isPending && <Loading what="webhooks" />}
        <ErrorMessage error={hooks.error} prefix="Could not load webhooks" />
        {hooks.data?.length === 0 && <Empty>No webhooks yet.</Empty>}
        {hooks.data && hooks.data.length > 0 && (
          <ul className="space-y-3">
            {hooks.data.map((h) => (
              <li
                key={h.id}
                data-testid="webhook-card"
                className={`space-y-2 text-sm ${panelClass}`}
              >
                <p className="break-all font-medium">{h.url}</p>
                <p>
                  {h.format === "slack" ? "Slack" : "LabLink JSON"} ·{" "}
                  {h.enabled ? "enabled" : "disabled"} · {h.events.join(", ")}
                </p>
                <div className="flex flex-wrap gap-2">
                  <button
                    type="button"
                    className={buttonClass}
                    disabled={test.isPending}
                    onClick={() => test.mutate({ id: h.id })}
                  >
                    Send a test
                  </button>
                  <button
                    type="button"
                    className={buttonClass}
                    disabled={update.isPending}
                    onClick={() => update.mutate({ id: h.id, enabled: !h.enabled })}
                  >
                    {h.enabled ? "Disable" : "Enable"}
                  </button>
                  <button
                    type="button"
                    className={buttonClass}
                    aria-expanded={openId === h.id}
                    onClick={() => setOpenId(openId === h.id ? null : h.id)}
                  >
                    {openId === h.id ? "Hide deliveries" : "Deliveries"}
                  </button>
                  <ConfirmButton
                    label="Delete"
                    accessibleLabel={`Delete webhook ${h.url}`}
                    question="Delete this webhook and its delivery history?"
                    confirmLabel="Delete webhook"
                    danger
                    pending={remove.isPending}
                    onConfirm={() => remove.mutate({ id: h.id })}
                  />
                </div>
                {test.variables?.id === h.id && (
                  <ErrorMessage error={test.error} prefix="Could not send a test" />
                )}
                {openId === h.id && <Deliveries webhookId={h.id} />}
              </li>
            ))}
          </ul>
        )}
      </section>
    </div>
  );
}

function Deliveries({ webhookId }: { webhookId: string }) {
  const trpc = useTRPC();
  const deliveries = useQuery({
    ...trpc.webhook.deliveries.queryOptions({ webhookId, limit: 50 }),
    // Pending deliveries change within seconds.
    refetchInterval: 5_000,
  });
  if (deliveries.isPending) return <Loading what="deliveries" />;
  if (deliveries.error)
    return <ErrorMessage error={deliveries.error} prefix="Could not load deliveries" />;
  if (deliveries.data.length === 0) return <Empty>Nothing sent yet.</Empty>;
  return (
    <table className="w-full text-left text-xs">
      <thead>
        <tr>
          <th scope="col">Event</th>
          <th scope="col">Status</th>
          <th scope="col">Attempts</th>
          <th scope="col">Response</th>
          <th scope="col">Created</th>
        </tr>
      </thead>
      <tbody>
        {deliveries.data.map((d) => (
          <tr key={d.id} data-testid="webhook-delivery">
            <td>{d.event}</td>
            <td>
              <StatusBadge status={d.status} />
            </td>
            <td>{d.attempts}</td>
            <td className="break-all">{d.error ?? d.responseCode ?? "–"}</td>
            <td>
              <When at={d.createdAt} />
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
