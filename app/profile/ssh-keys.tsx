"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useTRPC } from "../providers";

/** SSH public keys: installed on the VM at your next claim, removed when you release it. */
export function SshKeys() {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const keys = useQuery(trpc.profile.sshKeys.list.queryOptions());
  const [publicKey, setPublicKey] = useState("");
  const [label, setLabel] = useState("");
  const refresh = () =>
    queryClient.invalidateQueries({ queryKey: trpc.profile.sshKeys.list.queryKey() });
  const add = useMutation(
    trpc.profile.sshKeys.add.mutationOptions({
      onSuccess: () => {
        setPublicKey("");
        setLabel("");
        return refresh();
      },
    }),
  );
  const remove = useMutation(trpc.profile.sshKeys.remove.mutationOptions({ onSuccess: refresh }));

  return (
    <section
      aria-labelledby="ssh-heading"
      className="space-y-4 rounded-lg border border-slate-200 bg-white p-6 dark:border-slate-800 dark:bg-slate-900"
    >
      <h2 id="ssh-heading" className="text-lg font-semibold">
        SSH keys
      </h2>
      <p className="text-sm text-slate-600 dark:text-slate-400">
        Keys are installed on your VM when you claim it and removed when you release it. Accepted:
        ssh-ed25519, ECDSA, and RSA of 3072 bits or more.
      </p>
      {keys.isError && (
        <p role="alert" className="text-sm text-red-700 dark:text-red-300">
          {keys.error.message}
        </p>
      )}
      <ul className="space-y-2" aria-label="Your SSH keys" data-testid="ssh-keys">
        {keys.data?.length === 0 && <li className="text-sm text-slate-500">No keys yet.</li>}
        {keys.data?.map((k) => (
          <li
            key={k.id}
            className="flex flex-wrap items-center justify-between gap-2 rounded border border-slate-200 p-3 text-sm dark:border-slate-700"
          >
            <span>
              <span className="font-medium">{k.label}</span>{" "}
              <span className="text-slate-600 dark:text-slate-400">
                {k.algorithm} · <span className="font-mono">{k.fingerprint}</span>
              </span>
            </span>
            <button
              type="button"
              onClick={() => remove.mutate({ id: k.id })}
              className="rounded border border-red-700 px-2 py-1 text-red-700 hover:bg-red-50 dark:border-red-400 dark:text-red-300 dark:hover:bg-red-950"
              aria-label={`Remove key ${k.label}`}
            >
              Remove
            </button>
          </li>
        ))}
      </ul>
      <form
        className="space-y-3"
        onSubmit={(e) => {
          e.preventDefault();
          add.mutate({ publicKey, label: label.trim() || undefined });
        }}
      >
        <div>
          <label htmlFor="ssh-key" className="mb-1 block text-sm font-medium">
            Public key
          </label>
          <textarea
            id="ssh-key"
            required
            rows={3}
            value={publicKey}
            onChange={(e) => setPublicKey(e.target.value)}
            placeholder="ssh-ed25519 AAAA… you@laptop"
            aria-invalid={add.isError}
            aria-describedby={add.isError ? "ssh-key-error" : undefined}
            className="w-full rounded border border-slate-300 px-3 py-2 font-mono text-xs dark:border-slate-700 dark:bg-slate-950"
          />
          {add.isError && (
            <p
              id="ssh-key-error"
              role="alert"
              className="mt-1 text-sm text-red-700 dark:text-red-300"
            >
              {add.error.message}
            </p>
          )}
        </div>
        <div>
          <label htmlFor="ssh-label" className="mb-1 block text-sm font-medium">
            Name (optional)
          </label>
          <input
            id="ssh-label"
            maxLength={64}
            value={label}
            onChange={(e) => setLabel(e.target.value)}
            className="w-full rounded border border-slate-300 px-3 py-2 dark:border-slate-700 dark:bg-slate-950"
          />
        </div>
        <button
          type="submit"
          disabled={add.isPending}
          className="rounded bg-indigo-600 px-4 py-2 font-medium text-white hover:bg-indigo-700 disabled:opacity-60"
        >
          {add.isPending ? "Adding…" : "Add key"}
        </button>
      </form>
    </section>
  );
}
