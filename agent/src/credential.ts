import {
  chmodSync,
  closeSync,
  fchownSync,
  fsyncSync,
  openSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import type { Logger } from "./log";

/** Token files are readable by their owner only: root on cloud VMs, the current user locally. */
export const TOKEN_FILE_MODE = 0o600;

/**
 * Writes a secret file atomically: a fresh temporary file (mode 0600, owned by root when the
 * agent runs as root), flushed to disk, renamed over the old one, and the folder flushed. A crash
 * or power cut leaves either the old token or the new one, never an empty or partial file: an
 * agent that came back with half a token could never reach the server again.
 */
export function writeSecretFile(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  // A temporary file left by a crash could carry other permissions; `wx` below must create it.
  rmSync(tmp, { force: true });
  const fd = openSync(tmp, "wx", TOKEN_FILE_MODE);
  try {
    // openSync's mode is filtered by the umask; the file must be 0600 whatever the umask is.
    chmodSync(tmp, TOKEN_FILE_MODE);
    if (process.getuid?.() === 0) fchownSync(fd, 0, 0);
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  try {
    const dir = openSync(dirname(file), "r");
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  } catch {
    // Some file systems cannot fsync a folder; the rename itself is still atomic.
  }
}

/**
 * A token file others can read is made owner-only at start-up (a token file copied into place
 * with the default umask, for instance). Returns what was changed, for the log.
 */
export function restrictTokenFile(file: string): { from: number } | null {
  const mode = statSync(file).mode & 0o777;
  if (mode === TOKEN_FILE_MODE) return null;
  chmodSync(file, TOKEN_FILE_MODE);
  return { from: mode };
}

/**
 * Takes over rotated agent tokens. The server hands out a new token when the agent asks (at
 * registration with `rotateCredential`, and with `agent.rotate` before each new assignment), and
 * the agent asks only when it reads its token from a file it can rewrite: a token from the
 * environment could not survive a restart once the server has retired the old one.
 */
export class RotatingCredential {
  private inMemory: string | null = null;

  constructor(
    private readonly read: () => string,
    /** The token file, or null when the token came from the environment. */
    private readonly file: string | null,
    private readonly log: Logger,
  ) {}

  /** The token for the next request. */
  readonly current = (): string => this.inMemory ?? this.read();

  get canRotate(): boolean {
    return this.file !== null;
  }

  /**
   * Stores a new token (writeSecretFile), so a crash never leaves a half-written token. If the
   * write fails the token is kept in memory, so this process keeps working; the error says why a
   * restart would not.
   */
  readonly accept = (token: string): void => {
    if (!this.file) return;
    try {
      writeSecretFile(this.file, `${token}\n`);
      this.inMemory = null;
      this.log.info("agent token rotated", { file: this.file });
    } catch (err) {
      this.inMemory = token;
      this.log.error("could not store the rotated agent token; using it from memory", {
        file: this.file,
        error: err,
      });
    }
  };
}
