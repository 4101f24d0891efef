import { mkdtemp, readFile, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { type Runner, removeOwnedBy, UnixAccounts } from "../src/accounts";
import { createLogger } from "../src/log";
import { ResearchContainer, removalArgv } from "../src/research-container";

const silent = createLogger({ level: "error", write: () => {} });
const tempDir = () => mkdtemp(join(tmpdir(), "lablink-accounts-"));
const A = "0b9c7f2e-1d3a-4c5b-8e6f-a1b2c3d4e5f6";
const NAME = "ll-a1b2c3d4e5f6";

/** Stand-ins for useradd and friends: record the argv, and keep a passwd file up to date. */
async function fakeHost() {
  const dir = await tempDir();
  const passwd = join(dir, "passwd");
  const group = join(dir, "group");
  await writeFile(passwd, "root:x:0:0:root:/root:/bin/bash\n");
  await writeFile(group, "docker:x:999:\n");
  const calls: string[][] = [];
  const run: Runner = async (file, args) => {
    const prog = file.split("/").pop() as string;
    calls.push([prog, ...args]);
    const name = args.at(-1) as string;
    if (prog === "useradd") {
      const uid = args[args.indexOf("--uid") + 1];
      await writeFile(
        passwd,
        `${await readFile(passwd, "utf8")}${name}:x:${uid}:${uid}::${join(dir, name)}:/bin/bash\n`,
      );
    }
    if (prog === "userdel") {
      const text = await readFile(passwd, "utf8");
      await writeFile(
        passwd,
        text
          .split("\n")
          .filter((l) => !l.startsWith(`${name}:`))
          .join("\n"),
      );
    }
    return { code: 0, stdout: "", stderr: "" };
  };
  const accounts = new UnixAccounts({
    stateDir: dir,
    uidBase: 300_000,
    run,
    find: async (name) => `/usr/sbin/${name}`,
    passwdFile: passwd,
    groupFile: group,
    sudoersDir: dir,
    tmpDirs: [],
    cronSpools: [dir],
    processes: { list: async () => [] },
    log: silent,
  });
  return { dir, passwd, calls, accounts };
}

describe("UnixAccounts: one throw-away account per assignment", () => {
  it("creates a plain account from /etc/skel with a fresh uid, no sudo and no docker", async () => {
    const h = await fakeHost();
    const user = await h.accounts.create(NAME, A, false);
    expect(user).toMatchObject({ name: NAME, uid: 300_000 });
    expect(h.calls).toEqual([
      [
        "useradd",
        "--create-home",
        "--skel",
        "/etc/skel",
        "--shell",
        "/bin/bash",
        "--uid",
        "300000",
        "--user-group",
        "--comment",
        "LabLink researcher",
        NAME,
      ],
    ]);
    await expect(stat(join(h.dir, `lablink-${NAME}`))).rejects.toThrow();
    // Idempotent: a repeated assign creates nothing more.
    await h.accounts.create(NAME, A, false);
    expect(h.calls).toHaveLength(1);
    expect((await h.accounts.forAssignment(A))?.name).toBe(NAME);
  });

  it("grants sudo and the docker group only when the fleet gives researchers root", async () => {
    const h = await fakeHost();
    await h.accounts.create(NAME, A, true);
    expect(h.calls.at(-1)).toEqual(["usermod", "-aG", "docker", NAME]);
    expect(await readFile(join(h.dir, `lablink-${NAME}`), "utf8")).toBe(
      `${NAME} ALL=(ALL) NOPASSWD:ALL\n`,
    );
  });

  it("never reuses a uid, so files a past holder left somewhere are not the next one's", async () => {
    const h = await fakeHost();
    await h.accounts.create(NAME, A, false);
    await h.accounts.removeAll();
    const next = await h.accounts.create("ll-0000000000aa", crypto.randomUUID(), false);
    expect(next.uid).toBe(300_001);
  });

  it("refuses names of another form and accounts it did not create", async () => {
    const h = await fakeHost();
    await expect(h.accounts.create("ubuntu", A, false)).rejects.toThrow(/refusing/);
    await expect(h.accounts.create("root", A, false)).rejects.toThrow(/refusing/);
    await writeFile(
      h.passwd,
      `${await readFile(h.passwd, "utf8")}${NAME}:x:1500:1500::/home/x:/bin/sh\n`,
    );
    await expect(h.accounts.create(NAME, A, false)).rejects.toThrow(/did not create/);
    expect(h.calls).toEqual([]);
  });

  it("on release: ends sessions, removes the crontab, its containers and sudo rule, then the account", async () => {
    const h = await fakeHost();
    await h.accounts.create(NAME, A, true);
    const crontab = join(h.dir, NAME);
    await writeFile(crontab, "* * * * * evil\n");
    h.calls.length = 0;
    await h.accounts.removeAll();
    expect(h.calls.map((c) => c.slice(0, 3))).toEqual([
      ["loginctl", "terminate-user", NAME],
      ["crontab", "-r", "-u"],
      ["docker", "ps", "-aq"],
      ["userdel", "--remove", NAME],
    ]);
    expect(h.calls[2]).toContain(`label=lablink.account=${NAME}`);
    await expect(stat(crontab)).rejects.toThrow();
    await expect(stat(join(h.dir, `lablink-${NAME}`))).rejects.toThrow();
    expect(await h.accounts.forAssignment(A)).toBeNull();
    // Nothing left to remove: a second wipe is a no-op.
    h.calls.length = 0;
    await h.accounts.removeAll();
    expect(h.calls).toEqual([]);
  });
});

describe("removeOwnedBy", () => {
  it("removes the uid's files, leaves others', and removes a planted link without following it", async () => {
    const dir = await tempDir();
    const outside = join(await tempDir(), "precious");
    await writeFile(outside, "keep");
    await writeFile(join(dir, "mine"), "x");
    await symlink(outside, join(dir, "link"));
    const me = process.getuid?.() as number;
    await removeOwnedBy(dir, me + 1);
    await stat(join(dir, "mine"));
    await removeOwnedBy(dir, me);
    await expect(stat(join(dir, "mine"))).rejects.toThrow();
    await expect(stat(join(dir, "link"))).rejects.toThrow();
    expect(await readFile(outside, "utf8")).toBe("keep");
  });
});

describe("ResearchContainer", () => {
  it("removes the container with its volumes, then the workspace volume, then starts a fresh one", async () => {
    const calls: string[][] = [];
    const run: Runner = async (file, args) => {
      calls.push([file, ...args]);
      return { code: 0, stdout: "", stderr: "" };
    };
    await new ResearchContainer({
      name: "lablink-research",
      volume: "lablink-workspace",
      start: ["/opt/lablink/research-container.sh"],
      run,
      find: async () => "/usr/bin/docker",
    }).reset();
    expect(calls).toEqual([
      ["/usr/bin/docker", "rm", "--force", "--volumes", "lablink-research"],
      ["/usr/bin/docker", "volume", "rm", "--force", "lablink-workspace"],
      ["/opt/lablink/research-container.sh"],
    ]);
  });

  it("fails the wipe when docker is missing or the fresh container does not start", async () => {
    const none = new ResearchContainer({
      name: "c",
      volume: "v",
      start: null,
      find: async () => null,
    });
    await expect(none.reset()).rejects.toThrow(/docker is not installed/);
    const failing = new ResearchContainer({
      name: "c",
      volume: "v",
      start: ["/start"],
      find: async () => "/usr/bin/docker",
      run: async (file) => ({ code: file === "/start" ? 1 : 0, stdout: "", stderr: "" }),
    });
    await expect(failing.reset()).rejects.toThrow(/fresh research container/);
  });

  it("refuses names docker would not accept (no option injection)", () => {
    expect(() => removalArgv("--all", "v")).toThrow();
    expect(() => removalArgv("c", "-f")).toThrow();
  });
});
