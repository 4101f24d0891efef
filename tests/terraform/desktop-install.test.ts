import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  readUserDataTemplate,
  renderTemplate,
  templateVars,
} from "../../server/cloud/terraform/user-data";

/**
 * The bootstrap's browser-desktop install, cut out of the rendered user data and run in bash
 * with a stand-in `apt-get` on PATH: the nearest seam this machine has to a cloud VM (no
 * cloud-init, no real apt run here; it has not run on an EC2 instance).
 */
const rendered = renderTemplate(
  readUserDataTemplate(path.resolve(import.meta.dirname, "../../terraform")),
  templateVars({
    serverUrl: "https://lablink.example.edu",
    vmId: "0b7c6f2e-7a51-4a8e-9c1e-4f7f5b1c2d3e",
    agentToken: `lla_${"a".repeat(32)}_${"B".repeat(43)}`,
    agentImage: "ghcr.io/lablink/agent:1.4.2",
    containerImage: "ghcr.io/talmolab/lablink-client-base-image:0.0.9a",
    tutorialRepo: "",
    startupScript: "",
    startupOnError: "fail",
    researchUser: "ubuntu",
    vmName: "workshop-1",
    clientImageCompat: false,
    subjectSoftware: "sleap",
  }),
);

function run(withXvnc: boolean) {
  const root = mkdtempSync(path.join(os.tmpdir(), "lablink-desktop-install-"));
  const bin = path.join(root, "bin");
  mkdirSync(bin);
  mkdirSync(path.join(root, "var/log/lablink"), { recursive: true });
  const calls = path.join(root, "apt-calls");
  writeFileSync(
    path.join(bin, "apt-get"),
    `#!/bin/sh\necho "DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*" >> ${calls}\n`,
  );
  chmodSync(path.join(bin, "apt-get"), 0o755);
  if (withXvnc) {
    writeFileSync(path.join(bin, "Xvnc"), "#!/bin/sh\n");
    chmodSync(path.join(bin, "Xvnc"), 0o755);
  }
  const line = rendered.split("\n").find((l) => l.includes("Xvnc") && l.includes("apt-get"));
  if (!line) throw new Error("no desktop install line in the bootstrap");
  const script = `${line.replaceAll("/var/log/lablink/", `${root}/var/log/lablink/`)}\nwait\n`;
  const r = spawnSync("/bin/bash", ["-c", script], {
    // Only the stand-ins: this machine has the real Xvnc.
    env: { PATH: bin } as unknown as NodeJS.ProcessEnv,
    encoding: "utf8",
  });
  let recorded = "";
  try {
    recorded = readFileSync(calls, "utf8");
  } catch {
    // no apt-get call
  }
  return { status: r.status, recorded };
}

describe("bootstrap: browser desktop packages", () => {
  it("installs TigerVNC's Xvnc, a window manager and a terminal where they are missing", () => {
    const r = run(false);
    expect(r.status).toBe(0);
    expect(r.recorded.trim().split("\n")).toEqual([
      "DEBIAN_FRONTEND= update -y",
      "DEBIAN_FRONTEND=noninteractive install -y tigervnc-standalone-server openbox xterm x11-xserver-utils",
    ]);
  });

  it("does nothing where the image already has them", () => {
    expect(run(true)).toEqual({ status: 0, recorded: "" });
  });

  it("runs after the agent is started, so it never delays the VM's registration", () => {
    expect(rendered.indexOf("desktop.log")).toBeGreaterThan(
      rendered.indexOf("systemctl enable --now lablink-agent"),
    );
  });
});
