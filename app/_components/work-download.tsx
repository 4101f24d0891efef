"use client";

import { useRef, useState } from "react";
import { formatBytes } from "@/server/domain/format";

type Progress =
  | { kind: "idle" }
  | { kind: "waiting" }
  | { kind: "receiving"; received: number; folderBytes: number | null }
  | { kind: "saved"; received: number; fileName: string }
  | { kind: "failed"; message: string };

function fileNameOf(disposition: string | null): string {
  const m = /filename="([^"]+)"/.exec(disposition ?? "");
  return m?.[1] ?? "lablink-work.tar.gz";
}

/**
 * Downloads the holder's work folder (their home folder on the VM) as a tar.gz, read as a stream
 * so the page can show how much has arrived against the folder's size, then saved through a Blob
 * URL. The server sends the folder's size before compression; the archive is usually smaller, so
 * the bar is an estimate that jumps to done at the end.
 */
export function WorkDownload(props: { vmId: string; compact?: boolean }) {
  const [progress, setProgress] = useState<Progress>({ kind: "idle" });
  const abort = useRef<AbortController | null>(null);

  async function start() {
    const controller = new AbortController();
    abort.current = controller;
    setProgress({ kind: "waiting" });
    try {
      const res = await fetch(`/api/vm/${props.vmId}/work`, { signal: controller.signal });
      if (!res.ok || !res.body) {
        const body = (await res.json().catch(() => null)) as { error?: string } | null;
        setProgress({
          kind: "failed",
          message: body?.error ?? `The download failed (HTTP ${res.status}).`,
        });
        return;
      }
      const header = res.headers.get("x-lablink-work-bytes");
      const folderBytes = header === null ? null : Number(header);
      const reader = res.body.getReader();
      const parts: Uint8Array[] = [];
      let received = 0;
      setProgress({ kind: "receiving", received, folderBytes });
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        received += value.length;
        setProgress({ kind: "receiving", received, folderBytes });
      }
      const fileName = fileNameOf(res.headers.get("content-disposition"));
      const url = URL.createObjectURL(new Blob(parts as BlobPart[], { type: "application/gzip" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = fileName;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      setProgress({ kind: "saved", received, fileName });
    } catch (err) {
      if (controller.signal.aborted) {
        setProgress({ kind: "failed", message: "You stopped the download." });
        return;
      }
      setProgress({
        kind: "failed",
        message: `The download stopped before the end: ${err instanceof Error ? err.message : String(err)}. Try again.`,
      });
    } finally {
      abort.current = null;
    }
  }

  const busy = progress.kind === "waiting" || progress.kind === "receiving";
  return (
    <div
      id={props.compact ? undefined : "download-work"}
      data-testid={props.compact ? "work-download-release" : "work-download"}
      className="space-y-2 text-sm"
    >
      {!props.compact && (
        <p className="text-slate-600 dark:text-slate-400">
          Your work folder is your home folder on the VM. It is wiped when you release the VM:
          download it as a .tar.gz first.
        </p>
      )}
      <div className="flex flex-wrap items-center gap-3">
        <button
          type="button"
          onClick={() => void start()}
          disabled={busy}
          className="rounded border border-slate-400 px-3 py-1.5 font-medium hover:bg-slate-50 disabled:opacity-60 dark:hover:bg-slate-800"
        >
          {busy ? "Downloading…" : "Download my work (.tar.gz)"}
        </button>
        {busy && (
          <button
            type="button"
            onClick={() => abort.current?.abort()}
            className="rounded border px-3 py-1.5"
          >
            Stop download
          </button>
        )}
      </div>
      {progress.kind === "waiting" && <p role="status">Asking your VM to pack your files…</p>}
      {progress.kind === "receiving" && (
        <div role="status" data-testid="work-download-progress" className="space-y-1">
          <progress
            className="w-full max-w-md"
            aria-label="Download progress"
            max={progress.folderBytes || 1}
            value={Math.min(progress.received, progress.folderBytes || 1)}
          />
          <p>
            {formatBytes(progress.received)} received
            {progress.folderBytes !== null &&
              ` · your folder is ${formatBytes(progress.folderBytes)} before compression`}
          </p>
        </div>
      )}
      {progress.kind === "saved" && (
        <p role="status" data-testid="work-download-done">
          Saved {progress.fileName} ({formatBytes(progress.received)}).
        </p>
      )}
      {progress.kind === "failed" && (
        <p role="alert" className="text-red-700 dark:text-red-300">
          {progress.message}
        </p>
      )}
    </div>
  );
}
