import { type FileHandle, open, stat } from "node:fs/promises";
import { StringDecoder } from "node:string_decoder";

export type TailOptions = {
  path: string;
  /** Called once per complete line (without the newline); long lines arrive already cut. */
  onLine: (line: string) => void;
  /** Longest line handed on; the rest of a longer line is dropped (a marker says so). */
  maxLineChars: number;
  /**
   * Where to start in a file found at start-up: the whole file ("start"), or only its last
   * `startBytes` (an agent restarted mid-boot should not ship a huge log twice).
   */
  startBytes?: number;
  /** Most bytes read per poll, so one burst cannot hold the event loop. */
  chunkBytes?: number;
  /**
   * Where an earlier run of the agent stopped in this file (same inode): resume there instead,
   * so a restarted agent, or the next boot, does not ship the same lines again.
   */
  resumeFrom?: FilePosition | null;
};

/** A place in a file: its inode and the byte offset of the first line not yet handed on. */
export type FilePosition = { ino: number; position: number };

const TRUNCATED = " …[truncated]";

/** Cuts a line to `max` characters, marking the cut. */
export function truncateLine(line: string, max: number): string {
  return line.length <= max ? line : `${line.slice(0, max - TRUNCATED.length)}${TRUNCATED}`;
}

/**
 * Follows one log file like `tail -F`, by polling (`poll()` on a timer): survives the file not
 * existing yet, being truncated in place (copytruncate), and being rotated (renamed and
 * recreated: the rest of the old file is read before the new one).
 */
export class FileTail {
  private handle: FileHandle | null = null;
  private ino: number | null = null;
  private position = 0;
  private decoder = new StringDecoder("utf8");
  private partial = "";
  private first = true;
  private inflight: Promise<void> | null = null;

  constructor(private readonly o: TailOptions) {}

  /** Reads whatever was appended since the last poll. Never throws; one read at a time. */
  poll(): Promise<void> {
    this.inflight ??= this.step()
      .catch(async () => {
        // An unreadable file (permissions, EIO) is tried again on the next poll.
        await this.closeHandle();
      })
      .finally(() => {
        this.inflight = null;
      });
    return this.inflight;
  }

  private async step(): Promise<void> {
    let current: { ino: number; size: number } | null;
    try {
      const s = await stat(this.o.path);
      current = { ino: s.ino, size: s.size };
    } catch {
      current = null;
    }
    if (this.handle && (current === null || current.ino !== this.ino)) {
      // Rotated or removed: finish the old file (still open) before moving on.
      await this.drain();
      this.flushPartial();
      await this.closeHandle();
    }
    if (!current) return;
    if (!this.handle) {
      this.handle = await open(this.o.path, "r");
      this.ino = current.ino;
      const resume = this.first ? this.o.resumeFrom : null;
      const skip = this.first && this.o.startBytes !== undefined;
      this.decoder = new StringDecoder("utf8");
      this.partial = "";
      if (resume && resume.ino === current.ino && resume.position <= current.size) {
        this.position = resume.position;
      } else {
        this.position = skip ? Math.max(0, current.size - (this.o.startBytes ?? 0)) : 0;
        // Started mid-file: the first "line" is a fragment, not worth shipping.
        if (this.position > 0) this.skipFragment = true;
      }
      this.first = false;
    } else if (current.size < this.position) {
      // Truncated in place: start again from the top.
      this.position = 0;
      this.partial = "";
      this.decoder = new StringDecoder("utf8");
    }
    await this.drain();
  }

  private skipFragment = false;

  /** Where to resume after a restart (lines handed on so far); null while no file is open. */
  checkpoint(): FilePosition | null {
    if (this.ino === null) return null;
    return { ino: this.ino, position: this.position - Buffer.byteLength(this.partial) };
  }

  private async drain(): Promise<void> {
    const handle = this.handle;
    if (!handle) return;
    const chunk = Buffer.alloc(this.o.chunkBytes ?? 64 * 1024);
    for (let rounds = 0; rounds < 16; rounds++) {
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, this.position);
      if (bytesRead === 0) return;
      this.position += bytesRead;
      this.take(this.decoder.write(chunk.subarray(0, bytesRead)));
    }
  }

  private take(text: string): void {
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop() ?? "";
    for (const raw of parts) {
      if (this.skipFragment) {
        this.skipFragment = false;
        continue;
      }
      this.emit(raw);
    }
    // A "line" that never ends (binary output, a progress bar without newlines) must not grow
    // without bound: hand on what we have, cut.
    if (this.partial.length > this.o.maxLineChars * 4) {
      this.emit(this.partial);
      this.partial = "";
    }
  }

  private emit(raw: string): void {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "") return;
    this.o.onLine(truncateLine(line, this.o.maxLineChars));
  }

  private flushPartial(): void {
    const rest = this.partial + this.decoder.end();
    this.partial = "";
    if (rest) this.emit(rest);
  }

  /** Waits for a read in progress, then closes the file. */
  async close(): Promise<void> {
    await this.inflight;
    await this.closeHandle();
  }

  private async closeHandle(): Promise<void> {
    const h = this.handle;
    this.handle = null;
    this.ino = null;
    await h?.close().catch(() => {});
  }
}
