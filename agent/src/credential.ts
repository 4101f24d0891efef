import { renameSync, writeFileSync } from "node:fs";
import type { Logger } from "./log";

/**
 * Takes over rotated agent tokens. The server hands out a new token in the register reply only
 * when the agent asks (`rotateCredential`), and the agent asks only when it reads its token from
 * a file it can rewrite: a token from the environment could not survive a restart, and the old
 * one stops working after the server's grace period.
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
   * Stores a new token: written next to the file and renamed over it (atomic, mode 0600), so a
   * crash never leaves a half-written token. If the write fails the token is kept in memory, so
   * this process keeps working; the error says why a restart would not.
   */
  readonly accept = (token: string): void => {
    if (!this.file) return;
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, `${token}\n`, { mode: 0o600 });
      renameSync(tmp, this.file);
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
