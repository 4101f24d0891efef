import {
  chmodSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { RotatingCredential, restrictTokenFile, writeSecretFile } from "../src/credential";
import { silentLogger } from "../src/log";

const mode = (file: string) => statSync(file).mode & 0o777;
let umask: number | null = null;
afterEach(() => {
  if (umask !== null) process.umask(umask);
  umask = null;
});

describe("the agent's token file", () => {
  it("a rotated token is written atomically, mode 0600 and owned by the agent's user, whatever the umask or a stale temporary file", () => {
    const dir = mkdtempSync(join(tmpdir(), "lablink-cred-"));
    const file = join(dir, "agent.token");
    writeFileSync(file, "lla_old\n", { mode: 0o600 });
    // A careless umask, and a world-readable temporary file left by an earlier crash.
    umask = process.umask(0o000);
    writeFileSync(`${file}.${process.pid}.tmp`, "junk", { mode: 0o666 });
    const cred = new RotatingCredential(
      () => readFileSync(file, "utf8").trim(),
      file,
      silentLogger,
    );
    cred.accept("lla_new");
    expect(readFileSync(file, "utf8")).toBe("lla_new\n");
    expect(cred.current()).toBe("lla_new");
    expect(mode(file)).toBe(0o600);
    // Root on a cloud VM: the file is root's. Elsewhere: the current user's.
    expect(statSync(file).uid).toBe(process.getuid?.());
    expect(readdirSync(dir)).toEqual(["agent.token"]);
  });

  it("writeSecretFile creates a new file 0600", () => {
    const dir = mkdtempSync(join(tmpdir(), "lablink-cred-"));
    const file = join(dir, "fresh.token");
    umask = process.umask(0o000);
    writeSecretFile(file, "x\n");
    expect(mode(file)).toBe(0o600);
  });

  it("a token file others can read is made owner-only at start-up", () => {
    const dir = mkdtempSync(join(tmpdir(), "lablink-cred-"));
    const file = join(dir, "agent.token");
    writeFileSync(file, "lla_x\n");
    chmodSync(file, 0o644);
    expect(restrictTokenFile(file)).toEqual({ from: 0o644 });
    expect(mode(file)).toBe(0o600);
    expect(restrictTokenFile(file)).toBeNull();
  });
});
