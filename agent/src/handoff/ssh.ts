import { randomBytes } from "node:crypto";
import { chown, lstat, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * The researcher's SSH public keys in the research user's `~/.ssh/authorized_keys`, inside a
 * marked block so keys an image builder put there survive and a wipe removes exactly ours.
 *
 * The agent may run as root while the research user owns the home, so nothing here follows a
 * symlink: a researcher who replaced `.ssh` or `authorized_keys` with a link to /etc/shadow gets
 * an error, not a root write through the link. The file is replaced by rename (which replaces a
 * link itself, never its target).
 */
const BEGIN = "# >>> LabLink managed keys: removed when the VM is released >>>";
const END = "# <<< LabLink managed keys <<<";

/** `type base64` only: no options (`command=`, `from=`), no comment, nothing that spans lines. */
const KEY_LINE =
  /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/]{20,2000}={0,2}$/;

export function isAcceptableKeyLine(line: string): boolean {
  return KEY_LINE.test(line);
}

export type KeyOwner = { uid: number; gid: number } | null;

async function refuseLink(path: string): Promise<boolean> {
  try {
    const s = await lstat(path);
    if (s.isSymbolicLink()) throw new Error(`${path} is a symbolic link; refusing to touch it`);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** Removes our block from a file's text, keeping every other line. */
export function withoutManagedBlock(text: string): string {
  const out: string[] = [];
  let inside = false;
  for (const line of text.split("\n")) {
    if (line === BEGIN) inside = true;
    else if (line === END) inside = false;
    else if (!inside) out.push(line);
  }
  return out.join("\n").replace(/\n+$/, "");
}

export class AuthorizedKeys {
  constructor(
    private readonly home: string,
    private readonly owner: KeyOwner,
  ) {}

  get path(): string {
    return join(this.home, ".ssh", "authorized_keys");
  }

  private async existing(): Promise<string> {
    const dir = join(this.home, ".ssh");
    if (!(await refuseLink(dir))) return "";
    if (!(await refuseLink(this.path))) return "";
    return readFile(this.path, "utf8");
  }

  private async write(text: string): Promise<void> {
    await refuseLink(this.home);
    const dir = join(this.home, ".ssh");
    if (!(await refuseLink(dir))) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      if (this.owner) await chown(dir, this.owner.uid, this.owner.gid);
    }
    const tmp = join(dir, `.authorized_keys.lablink-${randomBytes(6).toString("hex")}`);
    try {
      await writeFile(tmp, text, { mode: 0o600, flag: "wx" });
      if (this.owner) await chown(tmp, this.owner.uid, this.owner.gid);
      await rename(tmp, this.path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  /** Replaces our block with these keys (idempotent). Invalid lines are refused, not skipped. */
  async install(keys: readonly string[]): Promise<void> {
    const bad = keys.find((k) => !isAcceptableKeyLine(k));
    if (bad !== undefined) throw new Error("refusing an SSH key that is not `type base64`");
    const kept = withoutManagedBlock(await this.existing());
    const block = keys.length > 0 ? [BEGIN, ...keys, END].join("\n") : "";
    const text = [kept, block].filter((part) => part.length > 0).join("\n");
    await this.write(text.length > 0 ? `${text}\n` : "");
  }

  /** Removes our block; the file stays if other keys remain. */
  async remove(): Promise<void> {
    const text = await this.existing();
    if (!text.includes(BEGIN)) return;
    const kept = withoutManagedBlock(text);
    await this.write(kept.length > 0 ? `${kept}\n` : "");
  }

  /** The keys currently in our block (tests, logs). */
  async managed(): Promise<string[]> {
    const text = await this.existing();
    const lines = text.split("\n");
    const start = lines.indexOf(BEGIN);
    const end = lines.indexOf(END);
    return start >= 0 && end > start ? lines.slice(start + 1, end) : [];
  }
}
