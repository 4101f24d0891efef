"use client";

import type RFB from "@novnc/novnc";
import { useQuery } from "@tanstack/react-query";
import Link from "next/link";
import { useCallback, useEffect, useRef, useState } from "react";
import { useTRPC } from "../../providers";

/** Close code the relay sends when the VM was released (server/api/desktop-relay.ts). */
const CLOSE_RELEASED = 4001;
const RETRY_BASE_MS = 1_000;
const RETRY_CAP_MS = 15_000;

type Phase =
  | { kind: "connecting" }
  | { kind: "connected" }
  | { kind: "reconnecting"; inS: number }
  | { kind: "released" }
  | { kind: "unavailable"; reason: string };

function phaseText(p: Phase): string {
  switch (p.kind) {
    case "connecting":
      return "Connecting to the desktop…";
    case "connected":
      return "Connected";
    case "reconnecting":
      return `Connection dropped, reconnecting in ${p.inS} s…`;
    case "released":
      return "VM released: the desktop is closed.";
    case "unavailable":
      return p.reason;
  }
}

/**
 * noVNC's RFB client on a WebSocket to this server, which relays it to the VM's agent. The page
 * owns the socket (RFB takes it as its channel) so it can read the close code: "released" stops,
 * anything else reconnects with a growing delay while the server still says the desktop is ours.
 */
export function DesktopViewer({ vmId }: { vmId: string }) {
  const trpc = useTRPC();
  const status = useQuery({
    ...trpc.vm.desktop.queryOptions({ vmId }),
    refetchInterval: 5_000,
    retry: false,
  });
  const screen = useRef<HTMLDivElement>(null);
  const rfb = useRef<RFB | null>(null);
  const attempt = useRef(0);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const stopped = useRef(false);
  const [phase, setPhase] = useState<Phase>({ kind: "connecting" });
  const [remoteClip, setRemoteClip] = useState("");
  const [localClip, setLocalClip] = useState("");
  const refetch = status.refetch;

  const connect = useCallback(async () => {
    const target = screen.current;
    if (!target || stopped.current) return;
    setPhase({ kind: "connecting" });
    const { default: RFBClass } = await import("@novnc/novnc");
    if (stopped.current) return;
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${window.location.host}/api/desktop/${vmId}/ws`);
    ws.binaryType = "arraybuffer";
    const client = new RFBClass(target, ws, { shared: true });
    client.scaleViewport = true;
    client.resizeSession = true;
    client.background = "rgb(15, 23, 42)";
    rfb.current = client;
    client.addEventListener("connect", () => {
      attempt.current = 0;
      setPhase({ kind: "connected" });
      client.focus();
    });
    client.addEventListener("clipboard", (e) => {
      setRemoteClip((e as CustomEvent<{ text: string }>).detail.text);
    });
    let closeCode = 0;
    ws.addEventListener("close", (e) => {
      closeCode = e.code;
    });
    client.addEventListener("disconnect", () => {
      rfb.current = null;
      if (stopped.current) return;
      if (closeCode === CLOSE_RELEASED) {
        stopped.current = true;
        setPhase({ kind: "released" });
        return;
      }
      // Refused or dropped: ask the server whether the desktop is still ours before retrying.
      void refetch().then((r) => {
        if (stopped.current) return;
        if (r.isError || !r.data?.available) {
          stopped.current = true;
          setPhase(
            r.data?.reason
              ? { kind: "unavailable", reason: r.data.reason }
              : r.isError
                ? { kind: "released" }
                : { kind: "unavailable", reason: "The desktop is not available." },
          );
          return;
        }
        const delay = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** attempt.current);
        attempt.current += 1;
        setPhase({ kind: "reconnecting", inS: Math.round(delay / 1000) });
        timer.current = setTimeout(() => void connect(), delay);
      });
    });
  }, [vmId, refetch]);

  useEffect(() => {
    stopped.current = false;
    void connect();
    return () => {
      stopped.current = true;
      if (timer.current) clearTimeout(timer.current);
      rfb.current?.disconnect();
      rfb.current = null;
    };
  }, [connect]);

  const data = status.data;
  return (
    <div className="space-y-3">
      <div className="flex flex-wrap items-baseline justify-between gap-3">
        <h1 className="text-2xl font-semibold">
          Desktop{data?.vmName ? <span className="font-mono"> · {data.vmName}</span> : null}
        </h1>
        <Link href={data?.asAdmin ? `/admin/vms/${vmId}` : "/"} className="text-sm underline">
          Back
        </Link>
      </div>
      {data?.asAdmin && (
        <p
          data-testid="desktop-admin-note"
          className="rounded border border-amber-300 bg-amber-50 p-2 text-sm dark:border-amber-800 dark:bg-amber-950"
        >
          You are viewing another person's desktop as an admin. This is recorded in the audit log
          and the VM's holder sees a notice while you are connected.
        </p>
      )}
      <p
        role="status"
        aria-live="polite"
        data-testid="desktop-status"
        data-phase={phase.kind}
        className="text-sm"
      >
        {phaseText(phase)}
      </p>
      <div
        ref={screen}
        data-testid="desktop-screen"
        className="h-[70vh] w-full overflow-hidden rounded border border-slate-300 bg-slate-900 dark:border-slate-700"
      />
      <section aria-labelledby="clipboard-heading" className="grid gap-3 md:grid-cols-2">
        <h2 id="clipboard-heading" className="sr-only">
          Clipboard
        </h2>
        <label className="block text-sm">
          <span className="text-slate-600 dark:text-slate-400">Copied on the VM</span>
          <textarea
            readOnly
            value={remoteClip}
            data-testid="desktop-clipboard-remote"
            rows={3}
            className="mt-1 w-full rounded border border-slate-300 bg-white p-2 font-mono text-xs dark:border-slate-700 dark:bg-slate-900"
          />
        </label>
        <div className="text-sm">
          <label className="block">
            <span className="text-slate-600 dark:text-slate-400">Text to paste on the VM</span>
            <textarea
              value={localClip}
              onChange={(e) => setLocalClip(e.target.value)}
              data-testid="desktop-clipboard-local"
              rows={3}
              className="mt-1 w-full rounded border border-slate-300 bg-white p-2 font-mono text-xs dark:border-slate-700 dark:bg-slate-900"
            />
          </label>
          <button
            type="button"
            disabled={phase.kind !== "connected" || localClip === ""}
            onClick={() => rfb.current?.clipboardPasteFrom(localClip)}
            className="mt-1 rounded bg-indigo-600 px-3 py-1.5 font-medium text-white hover:bg-indigo-700 disabled:opacity-60"
          >
            Send to the VM's clipboard
          </button>
        </div>
      </section>
    </div>
  );
}
