import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  readUserDataTemplate,
  renderTemplate,
  templateVars,
  type UserDataInput,
} from "../../server/cloud/terraform/user-data";

/**
 * Fleets with "LabLink client image" compatibility: the user data starts the fleet's image as an
 * original LabLink client, configured with the original's variables and the VM's own token, and
 * runs no LabLink agent beside it. The rendered bootstrap is run here for real, with its paths
 * moved into a temporary folder and docker, iptables and systemctl replaced by recorders.
 */
const moduleDir = path.resolve(import.meta.dirname, "../../terraform");
const TOKEN = `lla_${"a".repeat(32)}_${"B".repeat(43)}`;

const input: UserDataInput = {
  serverUrl: "https://lablink.example.edu",
  vmId: "0b7c6f2e-7a51-4a8e-9c1e-4f7f5b1c2d3e",
  agentToken: TOKEN,
  agentImage: "ghcr.io/lablink/agent:1.4.2",
  containerImage: "ghcr.io/talmolab/lablink-client-base-image:0.0.9a",
  tutorialRepo: "https://github.com/talmolab/sleap-tutorial-data.git",
  startupScript: "",
  startupOnError: "fail",
  researchUser: "ubuntu",
  vmName: "workshop-3",
  clientImageCompat: true,
  subjectSoftware: "sleap",
};

const sandboxes: string[] = [];
afterAll(() => {
  for (const d of sandboxes) rmSync(d, { recursive: true, force: true });
});

/** Runs the rendered bootstrap in a sandbox; returns what the recorders saw. */
function runBootstrap(vars: UserDataInput) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "lablink-userdata-"));
  sandboxes.push(dir);
  const bin = path.join(dir, "bin");
  spawnSync("mkdir", ["-p", bin]);
  const script = renderTemplate(readUserDataTemplate(moduleDir), templateVars(vars))
    .replaceAll("/etc/lablink", `${dir}/etc`)
    .replaceAll("/var/lib/lablink", `${dir}/lib`)
    .replaceAll("/var/log", `${dir}/log`)
    .replaceAll("/run/lablink", `${dir}/run`)
    .replaceAll("/opt/lablink", `${dir}/opt`)
    .replaceAll("/etc/systemd/system", `${dir}/systemd`);
  const recorder = (name: string, extra = "") =>
    writeFileSync(
      path.join(bin, name),
      `#!/bin/bash\necho "${name} $*" >> "${dir}/calls"\n${extra}exit 0\n`,
      { mode: 0o755 },
    );
  // docker run: keep a copy of the environment file the container is started with.
  recorder(
    "docker",
    `prev=""; for a in "$@"; do if [ "$prev" = "--env-file" ]; then cp "$a" "${dir}/seen.env"; fi; prev="$a"; done\n`,
  );
  for (const name of ["iptables", "systemctl", "apt-get", "curl", "gpg", "nvidia-ctk"])
    recorder(name);
  writeFileSync(path.join(bin, "lspci"), "#!/bin/bash\nexit 1\n", { mode: 0o755 });
  const file = path.join(dir, "bootstrap.sh");
  writeFileSync(file, script);
  chmodSync(file, 0o700);
  spawnSync("mkdir", ["-p", `${dir}/log`, `${dir}/systemd`]);
  const r = spawnSync("bash", [file], {
    encoding: "utf8",
    env: { NODE_ENV: "test", PATH: `${bin}:/usr/bin:/bin`, HOME: dir },
  });
  const read = (f: string) => {
    try {
      return readFileSync(path.join(dir, f), "utf8");
    } catch {
      return "";
    }
  };
  return { r, dir, calls: read("calls"), seenEnv: read("seen.env"), output: r.stdout + r.stderr };
}

describe("user data of a client-image compatible fleet", () => {
  it("starts the image with the original's variables and the VM's own token, and no LabLink agent", () => {
    const { r, dir, calls, seenEnv, output } = runBootstrap(input);
    expect(r.status, output).toBe(0);
    const env = Object.fromEntries(
      seenEnv
        .trim()
        .split("\n")
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    expect(env).toEqual({
      ALLOCATOR_URL: "https://lablink.example.edu",
      API_TOKEN: TOKEN,
      VM_NAME: "workshop-3",
      SUBJECT_SOFTWARE: "sleap",
      TUTORIAL_REPO_TO_CLONE: "https://github.com/talmolab/sleap-tutorial-data.git",
      STARTUP_ON_ERROR: "fail",
    });
    // The token file and the environment file are root-only; the token is never printed.
    expect(statSync(path.join(dir, "etc", "client.env")).mode & 0o077).toBe(0);
    expect(output).not.toContain(TOKEN);
    expect(calls).not.toContain(TOKEN);
    expect(calls).toMatch(
      /docker run -d --name lablink-client --restart unless-stopped --env-file \S+ ghcr\.io\/talmolab\/lablink-client-base-image:0\.0\.9a/,
    );
    expect(calls).toContain("iptables -I DOCKER-USER -d 169.254.169.254/32 -j REJECT");
    // The client is the VM's agent: a LabLink agent beside it would rotate its token away.
    expect(calls).not.toContain("lablink-agent");
    expect(output).toContain("bootstrap complete (LabLink client image)");
  });

  it("runs the LabLink agent as before when the fleet is not client-image compatible", () => {
    const { r, calls, seenEnv, output } = runBootstrap({ ...input, clientImageCompat: false });
    expect(r.status, output).toBe(0);
    expect(seenEnv).toBe("");
    expect(calls).toContain("systemctl enable --now lablink-agent");
    expect(calls).not.toContain("--name lablink-client ");
  });
});
