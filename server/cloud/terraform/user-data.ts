import { readFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";

/** EC2 refuses user data over 16 KB. */
export const USER_DATA_LIMIT = 16 * 1024;

export type UserDataInput = {
  serverUrl: string;
  vmId: string;
  agentToken: string;
  agentImage: string;
  containerImage: string;
  tutorialRepo: string;
  startupScript: string;
  startupOnError: "fail" | "continue";
  /** Unix account the agent installs researchers' SSH keys for (validated by the fleet config). */
  researchUser: string;
  /** The VM's name: VM_NAME for original LabLink client images. */
  vmName: string;
  /** Run the container image as an original LabLink client instead of the LabLink agent. */
  clientImageCompat: boolean;
  /** SUBJECT_SOFTWARE for original LabLink client images. */
  subjectSoftware: string;
};

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");

/**
 * The variables main.tf hands to templatefile() for one VM, computed the same way (the HCL test
 * checks the two lists match), so the runner can check the size before Terraform runs.
 */
export function templateVars(i: UserDataInput): Record<string, string> {
  return {
    server_url_b64: b64(i.serverUrl),
    vm_id: i.vmId,
    agent_token_b64: b64(i.agentToken),
    agent_image_b64: b64(i.agentImage),
    container_image_b64: b64(i.containerImage),
    tutorial_repo_b64: b64(i.tutorialRepo),
    startup_script_b64: b64(i.startupScript),
    startup_on_error: i.startupOnError,
    research_user: i.researchUser,
    vm_name: i.vmName,
    client_image_compat: i.clientImageCompat ? "true" : "false",
    subject_software_b64: b64(i.subjectSoftware),
  };
}

/**
 * Terraform's templatefile() for the subset the user-data template uses: `${name}` interpolation,
 * `$${` and `%%{` escapes, no directives.
 */
export function renderTemplate(template: string, vars: Record<string, string>): string {
  if (/(?<!%)%\{/.test(template)) throw new Error("template directives are not supported here");
  return template.replace(/\$(\$?)\{([^}]*)\}/g, (whole, escaped: string, name: string) => {
    if (escaped) return whole.slice(1);
    const value = vars[name.trim()];
    if (value === undefined) throw new Error(`template variable ${name} has no value`);
    return value;
  });
}

export function readUserDataTemplate(moduleDir: string): string {
  return readFileSync(path.join(moduleDir, "user-data.sh.tftpl"), "utf8");
}

/** base64gzip(templatefile(...)), as Terraform computes it. */
export function renderUserData(template: string, input: UserDataInput): string {
  return gzipSync(renderTemplate(template, templateVars(input)), { level: 9 }).toString("base64");
}
