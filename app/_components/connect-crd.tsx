"use client";

import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useTRPC } from "../providers";

type CrdStatus = {
  status: "pending" | "succeeded" | "failed";
  error: string | null;
} | null;

/**
 * Chrome Remote Desktop hand-off: the researcher pastes the command from Google's headless setup
 * page and picks a PIN; only the one-time code reaches the VM's agent, which registers the host.
 */
export function ConnectCrd({ crd }: { crd: CrdStatus }) {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const [command, setCommand] = useState("");
  const [pin, setPin] = useState("");
  const connect = useMutation(
    trpc.vm.connectCrd.mutationOptions({
      onSuccess: () => {
        setCommand("");
        setPin("");
        return queryClient.invalidateQueries({ queryKey: trpc.vm.mine.queryKey() });
      },
    }),
  );
  return (
    <section
      aria-labelledby="crd-heading"
      className="space-y-3 rounded border border-slate-200 p-4 dark:border-slate-700"
    >
      <h2 id="crd-heading" className="font-semibold">
        Connect with Chrome Remote Desktop
      </h2>
      <ol className="list-decimal space-y-1 pl-5 text-sm text-slate-700 dark:text-slate-300">
        <li>
          Open{" "}
          <a
            href="https://remotedesktop.google.com/headless"
            target="_blank"
            rel="noreferrer"
            className="text-indigo-700 underline dark:text-indigo-300"
          >
            Google's headless setup page
          </a>
          , choose Begin → Next → Authorize, and copy the Debian Linux command.
        </li>
        <li>Paste it below and choose a PIN of at least 6 digits (you will type it to connect).</li>
      </ol>
      <form
        className="space-y-3"
        onSubmit={(e) => {
          e.preventDefault();
          connect.mutate({ command, pin });
        }}
      >
        <div>
          <label htmlFor="crd-command" className="mb-1 block text-sm font-medium">
            Command from Google
          </label>
          <textarea
            id="crd-command"
            required
            rows={3}
            value={command}
            onChange={(e) => setCommand(e.target.value)}
            placeholder='DISPLAY= /opt/google/chrome-remote-desktop/start-host --code="4/0A…" …'
            className="w-full rounded border border-slate-300 px-3 py-2 font-mono text-xs dark:border-slate-700 dark:bg-slate-950"
          />
        </div>
        <div>
          <label htmlFor="crd-pin" className="mb-1 block text-sm font-medium">
            PIN
          </label>
          <input
            id="crd-pin"
            required
            type="password"
            inputMode="numeric"
            autoComplete="off"
            minLength={6}
            maxLength={32}
            value={pin}
            onChange={(e) => setPin(e.target.value)}
            className="w-48 rounded border border-slate-300 px-3 py-2 dark:border-slate-700 dark:bg-slate-950"
          />
        </div>
        <button
          type="submit"
          disabled={connect.isPending}
          className="rounded bg-indigo-600 px-4 py-2 text-sm font-medium text-white hover:bg-indigo-700 disabled:opacity-60"
        >
          {connect.isPending ? "Sending…" : "Set up remote desktop"}
        </button>
      </form>
      {connect.isError && (
        <p role="alert" className="text-sm text-red-700 dark:text-red-300">
          {connect.error.message}
        </p>
      )}
      {crd && (
        <p data-testid="crd-status" className="text-sm" role="status">
          {crd.status === "pending" && "Your VM is setting up remote desktop…"}
          {crd.status === "succeeded" &&
            "Remote desktop is ready: open remotedesktop.google.com/access and enter your PIN."}
          {crd.status === "failed" &&
            `Remote desktop setup failed: ${crd.error ?? "unknown reason"}`}
        </p>
      )}
    </section>
  );
}
