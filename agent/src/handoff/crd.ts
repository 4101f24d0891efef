import { spawn } from "node:child_process";
import { lstat, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { childEnv } from "../child-env";

/**
 * Chrome Remote Desktop hand-off. The researcher pastes Google's headless setup command into the
 * portal; the server keeps only its `--code` value and sends that with the PIN to this VM's agent.
 * Here the command line is rebuilt from scratch as an argv array: no shell ever sees the code, the
 * PIN travels on stdin (start-host asks for it twice), never in argv where `ps` would show it.
 */

/** Google's OAuth authorization codes: letters, digits and `/ _ - .`; nothing a shell cares about. */
export const CRD_CODE = /^[A-Za-z0-9/_.-]{8,512}$/;
export const CRD_PIN = /^[0-9]{6,32}$/;
export const DEFAULT_REDIRECT_URL = "https://remotedesktop.google.com/_/oauthredirect";
export const DEFAULT_START_HOST = "/opt/google/chrome-remote-desktop/start-host";

export type CrdUser = { uid: number; gid: number; name: string; home: string } | null;

export type StartHostOptions = {
  startHost: string;
  hostName: string;
  redirectUrl: string;
  /** Run as this user (the agent runs as root; start-host refuses root). Null: as the agent. */
  user: CrdUser;
  /** HOME for start-host when `user` is null (the local fleet's simulated home). */
  home: string;
  timeoutMs?: number;
};

export class HandoffError extends Error {
  override name = "HandoffError";
}

/** Builds start-host's argv. Exported so tests can check it is exactly this, nothing more. */
export function startHostArgs(code: string, o: Pick<StartHostOptions, "hostName" | "redirectUrl">) {
  return [`--code=${code}`, `--redirect-url=${o.redirectUrl}`, `--name=${o.hostName}`];
}

/** The last meaningful line of start-host's output, with the code cut out in case it echoes it. */
function reasonFrom(output: string, code: string): string {
  const lines = output
    .split(/\r?\n/)
    .map((l) =>
      (code ? l.split(code).join("[code]") : l)
        // start-host's own prompts (printed without a newline) are not the reason.
        .replace(/Enter (a|the same) PIN[^:]*:\s*/gi, "")
        .trim(),
    )
    .filter((l) => l.length > 0);
  return (lines.at(-1) ?? "").slice(0, 300);
}

/** Checks the code and PIN again (the server did too: defence in depth), then runs start-host. */
export async function runStartHost(code: string, pin: string, o: StartHostOptions): Promise<void> {
  if (!CRD_CODE.test(code)) throw new HandoffError("the setup code has characters it cannot have");
  if (!CRD_PIN.test(pin)) throw new HandoffError("the PIN must be 6 to 32 digits");
  await execStartHost(startHostArgs(code, o), pin, code, o);
}

/**
 * Spawns start-host with exactly `args` (no shell), writes the PIN twice on stdin, and turns a
 * failure into a readable reason with `secret` cut out of it.
 */
export function execStartHost(
  args: readonly string[],
  pin: string,
  secret: string,
  o: StartHostOptions,
): Promise<void> {
  const home = o.user?.home ?? o.home;
  const code = secret;
  return new Promise<void>((resolve, reject) => {
    const child = spawn(o.startHost, [...args], {
      shell: false,
      stdio: ["pipe", "pipe", "pipe"],
      cwd: home,
      // A minimal environment: nothing of the agent's (its token) reaches the research user.
      env: childEnv({
        PATH: "/usr/local/bin:/usr/bin:/bin",
        HOME: home,
        LANG: "C.UTF-8",
        USER: o.user?.name,
        LOGNAME: o.user?.name,
      }),
      ...(o.user ? { uid: o.user.uid, gid: o.user.gid } : {}),
    });
    let output = "";
    const collect = (d: Buffer) => {
      if (output.length < 64_000) output += d.toString("utf8");
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    child.stdin.on("error", () => {}); // start-host may exit before reading the PIN
    const timer = setTimeout(() => child.kill("SIGKILL"), o.timeoutMs ?? 90_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      const errno = (err as NodeJS.ErrnoException).code;
      reject(
        new HandoffError(
          errno === "ENOENT"
            ? "Chrome Remote Desktop is not installed on this VM"
            : `could not start Chrome Remote Desktop (${errno ?? err.message})`,
        ),
      );
    });
    child.on("close", (exitCode, signal) => {
      clearTimeout(timer);
      if (exitCode === 0) return resolve();
      const why = reasonFrom(output, code);
      reject(
        new HandoffError(
          signal === "SIGKILL"
            ? "Chrome Remote Desktop setup timed out"
            : `Chrome Remote Desktop setup failed${why ? `: ${why}` : ` (exit ${exitCode})`}`,
        ),
      );
    });
    child.stdin.end(`${pin}\n${pin}\n`);
  });
}

/**
 * Forgets the CRD host registration of the previous researcher: the host's config files
 * (`host#<hash>.json` holds the refresh token that lets the researcher's Google account in).
 * The host process itself goes with the research user's processes.
 */
export async function removeCrdRegistration(home: string): Promise<number> {
  const dir = join(home, ".config", "chrome-remote-desktop");
  // The research user owns these folders: never follow a link they planted (the agent is root).
  for (const path of [join(home, ".config"), dir]) {
    const s = await lstat(path).catch(() => null);
    if (!s) return 0;
    if (s.isSymbolicLink()) throw new Error(`${path} is a symbolic link; refusing to touch it`);
  }
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const entry of entries) {
    await rm(join(dir, entry), { recursive: true, force: true });
    removed += 1;
  }
  return removed;
}
