import { spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseStartupResult, readReadiness } from "../../agent/src/boot/readiness";
import {
  readUserDataTemplate,
  renderTemplate,
  templateVars,
  type UserDataInput,
} from "../../server/cloud/terraform/user-data";

/**
 * The bootstrap's research-container.sh and its after-reboot helper, cut out of the rendered user
 * data and run in bash with a stand-in `docker` (and `git`) on PATH and the VM's paths moved into
 * a temporary folder. The nearest seam to a cloud VM this machine has: no Docker engine, no
 * systemd, no cloud-init; none of this has run on a real EC2 instance.
 */
const moduleDir = path.resolve(import.meta.dirname, "../../terraform");
const input: UserDataInput = {
  serverUrl: "https://lablink.example.edu",
  vmId: "0b7c6f2e-7a51-4a8e-9c1e-4f7f5b1c2d3e",
  agentToken: `lla_${"a".repeat(32)}_${"B".repeat(43)}`,
  agentImage: "ghcr.io/lablink/agent:1.4.2",
  containerImage: "ghcr.io/talmolab/lablink-client-base-image:0.0.9a",
  tutorialRepo: "",
  startupScript: "echo hi\n",
  startupOnError: "fail",
  researchUser: "ubuntu",
  vmName: "workshop-1",
  clientImageCompat: false,
  subjectSoftware: "sleap",
};

function cut(script: string, file: string): string {
  const m = new RegExp(`cat > ${file} << 'SCRIPT'\\n([\\s\\S]*?)\\nSCRIPT\\n`).exec(script);
  if (!m?.[1]) throw new Error(`${file} not found in the bootstrap`);
  return `${m[1]}\n`;
}

/** A VM's file system in a folder; `docker` logs its calls and runs `exec`s on this machine. */
function vm(options: { onError: "fail" | "continue"; startup: string; dockerRunFails?: boolean }) {
  const root = mkdtempSync(path.join(os.tmpdir(), "lablink-bootstrap-"));
  const dirs = {
    etc: "etc/lablink",
    run: "run/lablink",
    lib: "var/lib/lablink",
    log: "var/log/lablink",
  };
  for (const d of [...Object.values(dirs), "bin"])
    mkdirSync(path.join(root, d), { recursive: true });
  const move = (text: string) =>
    text
      .replaceAll("/etc/lablink/", `${root}/etc/lablink/`)
      .replaceAll("/run/lablink", `${root}/run/lablink`)
      .replaceAll("/var/lib/lablink/", `${root}/var/lib/lablink/`)
      .replaceAll("/var/log/lablink/", `${root}/var/log/lablink/`);
  const rendered = renderTemplate(
    readUserDataTemplate(moduleDir),
    templateVars({ ...input, startupOnError: options.onError, startupScript: options.startup }),
  );
  writeFileSync(
    path.join(root, dirs.etc, "research.env"),
    `CONTAINER_IMAGE=img\nTUTORIAL_REPO=\nON_ERROR=${options.onError}\nGPU_FLAGS=""\n`,
  );
  writeFileSync(path.join(root, dirs.etc, "startup.sh"), options.startup);
  writeFileSync(
    path.join(root, "research-container.sh"),
    move(cut(rendered, "/opt/lablink/research-container.sh")),
  );
  writeFileSync(
    path.join(root, "after-boot.sh"),
    move(cut(rendered, "/opt/lablink/container-ready-after-boot.sh")),
  );
  const docker = path.join(root, "bin", "docker");
  writeFileSync(
    docker,
    [
      "#!/bin/bash",
      `echo "$*" >> ${root}/docker.calls`,
      // `docker exec <container> bash <file>`: run the script here, as the container would.
      'if [ "$1" = exec ]; then shift 2; exec "$@"; fi',
      `if [ "$1" = run ] && [ -e ${root}/docker-run-fails ]; then echo "pull access denied" >&2; exit 125; fi`,
      'if [ "$1" = inspect ]; then echo true; fi',
      "exit 0",
    ].join("\n"),
  );
  chmodSync(docker, 0o755);
  if (options.dockerRunFails) writeFileSync(path.join(root, "docker-run-fails"), "");
  const run = (file: string) =>
    spawnSync("bash", [path.join(root, file)], {
      encoding: "utf8",
      env: { PATH: `${root}/bin:${process.env.PATH}`, HOME: root, NODE_ENV: "test" },
      timeout: 20_000,
    });
  const paths = {
    containerReadyFile: path.join(root, dirs.run, "container-ready"),
    startupResultFile: path.join(root, dirs.lib, "startup-result.json"),
  };
  return {
    root,
    run,
    paths,
    result: () => JSON.parse(readFileSync(paths.startupResultFile, "utf8")),
    calls: () => readFileSync(path.join(root, "docker.calls"), "utf8"),
  };
}

describe("the bootstrap's startup result (research-container.sh with a stand-in docker)", () => {
  it("a script that succeeds: status ok, exit code 0, its lines, then the ready marker", async () => {
    const v = vm({ onError: "fail", startup: "echo hi\necho done\n" });
    const r = v.run("research-container.sh");
    expect(r.status, r.stderr).toBe(0);
    expect(v.result()).toMatchObject({
      status: "ok",
      exitCode: 0,
      onError: "fail",
      container: "up",
      lastLines: ["hi", "done"],
    });
    expect(Date.parse(v.result().finishedAt)).not.toBeNaN();
    expect(existsSync(v.paths.containerReadyFile)).toBe(true);
    expect(readFileSync(path.join(v.root, "var/log/lablink/container.log"), "utf8")).toBe(
      "hi\ndone\n",
    );
    expect(await readReadiness(v.paths)).toMatchObject({
      container: "ready",
      startup: { status: "ok" },
    });
  });

  it("exit 3 with policy fail: the container is stopped, status failed, no ready marker", async () => {
    const v = vm({ onError: "fail", startup: "echo step one\necho 'boom' >&2\nexit 3\n" });
    const r = v.run("research-container.sh");
    expect(r.status).toBe(1);
    expect(v.result()).toMatchObject({
      status: "failed",
      exitCode: 3,
      container: "down",
      lastLines: ["step one", "boom"],
    });
    expect(v.calls()).toContain("stop lablink-research");
    expect(existsSync(v.paths.containerReadyFile)).toBe(false);
    expect(await readReadiness(v.paths)).toMatchObject({ container: "failed" });
  });

  it("exit 3 with policy continue: status failed, the container stays and is marked ready", async () => {
    const v = vm({ onError: "continue", startup: "exit 3\n" });
    expect(v.run("research-container.sh").status).toBe(0);
    expect(v.result()).toMatchObject({ status: "failed", exitCode: 3, container: "up" });
    expect(v.calls()).not.toContain("stop lablink-research");
    expect(existsSync(v.paths.containerReadyFile)).toBe(true);
  });

  it("no script: status none; a container that never starts: a result all the same, container down", () => {
    const none = vm({ onError: "fail", startup: "" });
    expect(none.run("research-container.sh").status).toBe(0);
    expect(none.result()).toMatchObject({ status: "none", exitCode: null, container: "up" });

    const broken = vm({ onError: "continue", startup: "echo hi\n", dockerRunFails: true });
    expect(broken.run("research-container.sh").status).not.toBe(0);
    expect(broken.result()).toMatchObject({ status: "none", container: "down" });
    expect(existsSync(broken.paths.containerReadyFile)).toBe(false);
  });

  it("output with quotes, backslashes, tabs and colour codes is valid JSON; 20 lines of at most 500 bytes", () => {
    const v = vm({
      onError: "continue",
      startup: [
        'for i in $(seq 1 30); do echo "line $i"; done',
        "printf 'say \"hi\" \\\\ C:\\\\path\\tTAB \\033[31mred\\033[0m\\r\\n'",
        "printf 'x%.0s' $(seq 1 900); echo",
        "exit 7",
      ].join("\n"),
    });
    v.run("research-container.sh");
    const text = readFileSync(v.paths.startupResultFile, "utf8");
    const raw = JSON.parse(text);
    expect(raw.lastLines).toHaveLength(20);
    expect(raw.lastLines.at(-2)).toBe('say "hi" \\ C:\\path TAB [31mred[0m');
    expect(raw.lastLines.at(-1)).toHaveLength(500);
    expect(parseStartupResult(text)).toMatchObject({ status: "failed", exitCode: 7 });
  });

  it("after a reboot the ready marker comes back once the container runs, only if it was up", () => {
    const up = vm({ onError: "continue", startup: "exit 3\n" });
    up.run("research-container.sh");
    spawnSync("rm", ["-f", up.paths.containerReadyFile]);
    expect(up.run("after-boot.sh").status).toBe(0);
    expect(existsSync(up.paths.containerReadyFile)).toBe(true);

    const down = vm({ onError: "fail", startup: "exit 3\n" });
    down.run("research-container.sh");
    expect(down.run("after-boot.sh").status).toBe(0);
    expect(existsSync(down.paths.containerReadyFile)).toBe(false);
  });
});
