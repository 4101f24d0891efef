// biome-ignore-all lint/suspicious/noTemplateCurlyInString: HCL expressions look like JS template placeholders
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { parse } from "@cdktf/hcl2json";
import { beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../agent/src/config";
import { removalArgv } from "../../agent/src/research-container";
import {
  readUserDataTemplate,
  renderTemplate,
  renderUserData,
  templateVars,
  USER_DATA_LIMIT,
  type UserDataInput,
} from "../../server/cloud/terraform/user-data";

const moduleDir = path.resolve(import.meta.dirname, "../../terraform");
type Json = Record<string, unknown>;
const files: Record<string, string> = {};
const parsed: Record<string, Json> = {};

beforeAll(async () => {
  for (const f of readdirSync(moduleDir).filter((f) => f.endsWith(".tf"))) {
    files[f] = readFileSync(path.join(moduleDir, f), "utf8");
    parsed[f] = (await parse(f, files[f] as string)) as Json;
  }
});

const variables = () => {
  const out: Record<string, Json> = {};
  for (const p of Object.values(parsed))
    for (const [name, defs] of Object.entries((p.variable ?? {}) as Record<string, Json[]>))
      out[name] = defs[0] as Json;
  return out;
};
const resources = (type: string) => {
  const out: Json[] = [];
  for (const p of Object.values(parsed)) {
    const byName = ((p.resource ?? {}) as Record<string, Record<string, Json[]>>)[type] ?? {};
    for (const defs of Object.values(byName)) out.push(...defs);
  }
  return out;
};

// The variables the runner writes into lablink.tfvars.json (server/cloud/terraform/driver.ts).
const RUNNER_VARS = [
  "agent_image",
  "agent_tokens",
  "allowed_ssh_cidrs",
  "ami_id",
  "client_image_compat",
  "container_image",
  "fleet_name",
  "instance_type",
  "key_name",
  "region",
  "research_user",
  "root_volume_gb",
  "server_url",
  "startup_on_error",
  "startup_script",
  "subject_software",
  "subnet_id",
  "tags",
  "tutorial_repo",
  "vm_ids",
  "vpc_id",
];

describe("the terraform/ module", () => {
  it("declares exactly the variables the runner passes", () => {
    expect(Object.keys(variables()).sort()).toEqual(RUNNER_VARS);
    // The driver writes them from this list too (checked again end to end by the stand-in).
    const driver = readFileSync(
      path.resolve(import.meta.dirname, "../../server/cloud/terraform/driver.ts"),
      "utf8",
    );
    for (const v of RUNNER_VARS) expect(driver, v).toMatch(new RegExp(`\\b${v}: `));
  });

  it("uses every variable it declares", () => {
    const code = Object.entries(files)
      .filter(([f]) => f !== "variables.tf")
      .map(([, text]) => text)
      .join("\n");
    for (const name of Object.keys(variables()))
      expect(code, `var.${name} is never used`).toMatch(new RegExp(`var\\.${name}\\b`));
  });

  it("marks agent tokens sensitive and describes every variable", () => {
    const vars = variables();
    expect(vars.agent_tokens?.sensitive).toBe(true);
    for (const [name, v] of Object.entries(vars)) expect(v.description, name).toBeTruthy();
  });

  it("opens SSH to nobody by default, and never to 0.0.0.0/0", () => {
    expect(variables().allowed_ssh_cidrs?.default).toEqual([]);
    const ingress = resources("aws_vpc_security_group_ingress_rule");
    expect(ingress).toHaveLength(1);
    expect(ingress[0]).toMatchObject({
      for_each: "${toset(var.allowed_ssh_cidrs)}",
      from_port: 22,
      to_port: 22,
      cidr_ipv4: "${each.value}",
    });
    // No inline ingress and no other rule that opens anything to the world.
    for (const sg of resources("aws_security_group")) expect(sg.ingress).toBeUndefined();
    expect(resources("aws_security_group_rule")).toEqual([]);
    for (const r of resources("aws_vpc_security_group_egress_rule"))
      expect(r.from_port ?? r.to_port).toBeUndefined();
    expect(JSON.stringify(ingress)).not.toContain("0.0.0.0/0");
  });

  it("requires IMDSv2 and encrypts the root volume on every instance, tagged for reconciliation", () => {
    const instances = resources("aws_instance");
    expect(instances).toHaveLength(1);
    const vm = instances[0] as Json;
    expect(vm.for_each).toBe("${var.vm_ids}");
    expect((vm.metadata_options as Json[])[0]).toMatchObject({
      http_tokens: "required",
      http_endpoint: "enabled",
      // One hop: the host's agent reaches the metadata service, the research container does not.
      http_put_response_hop_limit: 1,
    });
    expect((vm.root_block_device as Json[])[0]).toMatchObject({ encrypted: true });
    expect(vm.tags).toMatchObject({ "lablink:vm": "${each.value}" });
    // The fleet tag reaches every resource through the provider's default tags.
    expect(files["versions.tf"]).toMatch(/default_tags[\s\S]*"lablink:fleet" = var\.fleet_name/);
    expect(String(vm.user_data_base64)).toMatch(/^\$\{base64gzip\(templatefile\(/);
  });

  it("looks up a Deep Learning AMI when none is given", () => {
    const ami = (((parsed["main.tf"] as Json).data as Json).aws_ami as Record<string, Json[]>)
      .deep_learning?.[0] as Json;
    expect(ami.count).toBe("${var.ami_id == null ? 1 : 0}");
    expect(JSON.stringify(ami.filter)).toMatch(/Deep Learning/);
  });

  it("outputs per VM name the instance id, VM id and addresses", () => {
    const out = ((parsed["outputs.tf"] as Json).output as Record<string, Json[]>).vms?.[0] as Json;
    for (const k of ["instance_id", "vm_id", "private_ip", "public_ip"])
      expect(String(out.value)).toContain(k);
  });
});

describe("user data", () => {
  const template = () => readUserDataTemplate(moduleDir);
  const token = `lla_${"a".repeat(32)}_${"B".repeat(43)}`;
  const realistic: UserDataInput = {
    serverUrl: "https://lablink.example.edu",
    vmId: "0b7c6f2e-7a51-4a8e-9c1e-4f7f5b1c2d3e",
    agentToken: token,
    agentImage: "ghcr.io/lablink/agent:1.4.2",
    containerImage: "ghcr.io/talmolab/lablink-client-base-image:0.0.9a",
    tutorialRepo: "https://github.com/talmolab/sleap-tutorial-data.git",
    // The longest startup script the API accepts, of typical shell text.
    startupScript:
      `#!/bin/bash\nset -e\n${"pip install --no-cache-dir sleap==1.4.1 && echo ok # $HOME ${USER} 'q' \"dq\"\n".repeat(110)}`.slice(
        0,
        8_000,
      ),
    startupOnError: "fail",
    researchUser: "ubuntu",
    vmName: "workshop-1",
    clientImageCompat: false,
    subjectSoftware: "sleap",
  };

  it("hands templatefile() exactly the values the template uses", () => {
    const call = String(
      (((parsed["main.tf"] as Json).resource as Json).aws_instance as Record<string, Json[]>)
        .vm?.[0]?.user_data_base64,
    );
    const hclKeys = [...call.matchAll(/^\s+(\w+)\s+=/gm)].map((m) => m[1]).sort();
    const placeholders = [
      ...new Set([...template().matchAll(/(?<!\$)\$\{(\w+)\}/g)].map((m) => m[1])),
    ].sort();
    expect(hclKeys).toEqual(placeholders);
    expect(Object.keys(templateVars(realistic)).sort()).toEqual(placeholders);
  });

  it("stays under EC2's 16 KB limit for a realistic fleet with the largest startup script", () => {
    const encoded = renderUserData(template(), realistic);
    expect(encoded.length).toBeLessThan(USER_DATA_LIMIT);
  });

  it("stays under the limit even for an incompressible startup script of the largest size", () => {
    const noise = randomBytes(8_000).toString("base64").slice(0, 8_000);
    const encoded = renderUserData(template(), { ...realistic, startupScript: noise });
    // About 16.2 KB (measured 2026-12-04): the 8,000-character cap on the script keeps every fleet
    // under 16 KB, with ~200 bytes to spare for the bootstrap itself.
    expect(encoded.length).toBeLessThan(USER_DATA_LIMIT);
  });

  it("writes the token to a root-only file and never prints it", () => {
    const script = renderTemplate(template(), templateVars(realistic));
    // The token travels base64-encoded and is decoded straight into a file.
    expect(script).not.toContain(token);
    expect(script).toMatch(/umask 077\nd '[A-Za-z0-9+/=]+' > \/etc\/lablink\/agent-token/);
    expect(script).toContain("LABLINK_AGENT_TOKEN_FILE=/etc/lablink/agent-token");
    expect(script).not.toMatch(/set -x/);
    expect(script).not.toMatch(/echo .*agent-token/);
    // Shell variables survive templatefile's escaping.
    expect(script).toContain('GPU_FLAGS="${GPU_FLAGS[*]:-}"');
    expect(script).toContain('"${GPU[@]}"');
  });

  it("gives the container GPUs only when the machine has an NVIDIA GPU", () => {
    const script = renderTemplate(template(), templateVars(realistic));
    expect(script).toMatch(
      /if lspci .*grep -qi nvidia[\s\S]*nvidia-ctk runtime configure[\s\S]*GPU_FLAGS=\(--gpus all\)/,
    );
  });

  it("runs the agent on the host under systemd, with an account per assignment, the container's log and ready marker", () => {
    const script = renderTemplate(
      template(),
      templateVars({ ...realistic, researchUser: "scientist" }),
    );
    // The image's own sudo login is the admins'; researchers never get it.
    expect(script).toContain("ADMIN_USER='scientist'");
    expect(script).not.toContain("LABLINK_RESEARCH_USER=");
    expect(script).toContain("LABLINK_RESEARCH_ACCOUNTS=per-assignment");
    // The agent sweeps the real /tmp, so its unit must not get a private one.
    expect(script).not.toMatch(/^PrivateTmp=yes/m);
    // node and the bundle come out of the agent image; the unit runs them with the measured flags.
    expect(script).toMatch(/docker cp "\$CID:\/opt\/lablink\/lablink-agent\.mjs"/);
    expect(script).toContain(
      "ExecStart=/opt/lablink/node --max-semi-space-size=1 --max-old-space-size=48 --lite-mode /opt/lablink/lablink-agent.mjs",
    );
    expect(script).toContain("systemctl enable --now lablink-agent");
    // What the agent ships and times: the startup script's output and the ready marker.
    expect(script).toContain("LABLINK_CONTAINER_LOG=/var/log/lablink/container.log");
    expect(script).toMatch(/startup\.sh 2>&1 \\\n\s+\| tee -a \/var\/log\/lablink\/container\.log/);
    expect(script).toContain("touch /run/lablink/container-ready");
    // The agent no longer runs in a container (it could not reach the research user's home).
    expect(script).not.toMatch(/docker run[^\n]*lablink-agent/);
  });

  it("runs the research container off the host network, away from the metadata service, with a volume the agent throws away", () => {
    const script = renderTemplate(template(), templateVars(realistic));
    expect(script).not.toMatch(/--network[= ]host|--net[= ]host/);
    expect(script).toContain("iptables -I DOCKER-USER -d 169.254.169.254/32 -j REJECT");
    // The workspace is a Docker volume, not a host folder that outlives the container.
    expect(script).toContain("-v lablink-workspace:/workspace");
    expect(script).not.toContain("/srv/lablink/workspace");
    // The agent's configuration, as its unit reads it, names the container, volume and script...
    const envFile = /cat > \/etc\/lablink\/agent\.env << EOF\n([\s\S]*?)\nEOF/.exec(script)?.[1];
    const env = Object.fromEntries(
      (envFile ?? "")
        .split("\n")
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    const config = loadConfig({
      NODE_ENV: "test",
      ...env,
      LABLINK_AGENT_TOKEN: "x",
      LABLINK_AGENT_TOKEN_FILE: undefined,
      LABLINK_SERVER_URL: "https://lablink.example.org",
      LABLINK_VM_ID: crypto.randomUUID(),
    });
    expect(config.researchAccounts).toBe("per-assignment");
    expect(config.researchContainer).toEqual({
      name: "lablink-research",
      volume: "lablink-workspace",
      start: ["/opt/lablink/research-container.sh"],
    });
    // ...and the script it runs after a release removes exactly what the agent removes first.
    for (const argv of removalArgv("lablink-research", "lablink-workspace"))
      expect(script).toContain(`docker ${argv.join(" ")}`);
    expect(script).toContain("docker run -d --name lablink-research");
  });

  it("renders a bootstrap bash accepts (bash -n)", () => {
    const script = renderTemplate(template(), templateVars(realistic));
    const r = spawnSync("bash", ["-n"], { input: script, encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("the packaged systemd unit and the bootstrap's unit run the agent with the same node flags", () => {
    const packaged = readFileSync(
      path.join(moduleDir, "..", "agent", "packaging", "lablink-agent.service"),
      "utf8",
    );
    const flags = (text: string) => /ExecStart=\S+(?: node)? ((?:--\S+ )+)/.exec(text)?.[1]?.trim();
    expect(flags(packaged)).toBeTruthy();
    expect(flags(template())).toBe(flags(packaged));
  });
});
