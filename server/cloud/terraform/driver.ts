import { copyFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import type { Fleet, Vm } from "../../db/schema";
import type { FleetLedger } from "../../domain/convergence";
import { DEFAULT_SSH_USER } from "../../domain/research-account";
import { type DriverRun, type FleetDriver, type InstanceInfo, quietRun } from "../driver";
import type { Ec2Api } from "../ec2/ec2";
import { terraformFleetConfig } from "./config";
import type { TerraformRunner } from "./runner";
import { readUserDataTemplate, renderUserData, USER_DATA_LIMIT } from "./user-data";

export type TerraformBackend =
  | { kind: "local" }
  | { kind: "s3"; bucket: string; region?: string; lockTable?: string };

export type TerraformDriverOptions = {
  /** The domain's side of convergence: rows, tokens and state changes (fleetLedger(db)). */
  ledger: FleetLedger;
  runner: TerraformRunner;
  /** The module (repository's terraform/ folder). */
  moduleDir: string;
  /** Per-fleet working folders live under here. */
  workDir: string;
  backend: TerraformBackend;
  /** URL agents reach the server at. */
  serverUrl: string;
  /** LABLINK_AGENT_IMAGE; without it, only "LabLink client image" fleets can be applied. */
  agentImage?: string;
  ec2: Ec2Api;
};

const VAR_FILE = "lablink.tfvars.json";
const PLAN_FILE = "lablink.tfplan";

/** `terraform output -json` for our module (only what we read). */
const outputsSchema = z.object({
  vms: z
    .object({
      value: z.record(
        z.string(),
        z.object({
          instance_id: z.string(),
          vm_id: z.string(),
          private_ip: z.string().nullable().optional(),
          public_ip: z.string().nullable().optional(),
        }),
      ),
    })
    .optional(),
});
type VmOutputs = NonNullable<z.infer<typeof outputsSchema>["vms"]>["value"];

/**
 * Terraform-managed EC2 fleets. Each fleet gets its own working folder (module copy, generated
 * variables, its own state or state key), so fleets never share a state the way the original's
 * single deployment-wide state did. VM rows exist before Terraform runs (the VM id and token go
 * into user data); `terraform output -json` afterwards fills in instance ids and addresses.
 */
export class TerraformFleetDriver implements FleetDriver {
  readonly name = "terraform" as const;

  constructor(private readonly o: TerraformDriverOptions) {}

  apply(fleet: Fleet, run: DriverRun = quietRun()): Promise<void> {
    return this.converge(fleet, run, null);
  }

  terminateVm(fleet: Fleet, vm: Vm, run: DriverRun = quietRun()): Promise<void> {
    return this.converge(fleet, run, vm.id);
  }

  async destroy(fleet: Fleet, run: DriverRun = quietRun()): Promise<void> {
    const rows = await this.rows(fleet);
    for (const vm of rows) await this.o.ledger.terminating(vm.id);
    const dir = await this.prepare(fleet, run);
    await this.writeVars(fleet, dir, []);
    try {
      const progress = { done: 0, total: 0 };
      await this.o.runner.run(
        dir,
        ["destroy", "-input=false", "-json", "-auto-approve", `-var-file=${VAR_FILE}`],
        run,
        { json: true, progress },
      );
    } finally {
      this.cleanup(dir);
    }
    for (const vm of rows) await this.o.ledger.terminated(vm.id);
    run.log(`${fleet.name}: ${rows.length} VM(s) terminated`);
  }

  async rebootVm(
    fleet: Fleet,
    vm: Vm,
    run: DriverRun = quietRun(),
    options: { hard?: boolean } = {},
  ): Promise<void> {
    if (!vm.providerId) throw new Error(`${vm.name} has no instance yet`);
    // A VM stuck in a reboot (automatic recovery's cold reboot) is rebooted again as it is.
    await this.o.ledger.rebooting(vm.id);
    if (options.hard) {
      run.log(`cold reboot of ${vm.name} (${vm.providerId}): stopping and starting the instance`);
      const now = await this.o.ec2.stopAndStart(this.region(fleet), vm.providerId, {
        signal: run.signal,
      });
      // Without an Elastic IP the instance came back with a new public address: record it, so
      // the researcher's ssh command and the admin's VM page point at the machine again.
      await this.o.ledger.launched(vm.id, {
        providerId: vm.providerId,
        publicIp: now.publicIp ?? null,
        privateIp: now.privateIp ?? null,
      });
      run.log(
        `${vm.name}: running again${now.publicIp ? ` at ${now.publicIp}` : ""}; its agent registers when the VM is back`,
      );
      return;
    }
    run.log(`rebooting ${vm.name} (${vm.providerId})`);
    await this.o.ec2.reboot(this.region(fleet), vm.providerId);
    run.log(`${vm.name}: reboot requested; its agent registers again when the VM is back`);
  }

  async describe(fleet: Fleet): Promise<InstanceInfo[]> {
    return this.o.ec2.describeFleet(this.region(fleet), fleet.name);
  }

  async close(): Promise<void> {}

  private region(fleet: Fleet): string {
    if (!fleet.region) throw new Error(`fleet ${fleet.name} has no region`);
    return fleet.region;
  }

  private rows(fleet: Fleet) {
    return this.o.ledger.rows(fleet.id);
  }

  private async converge(fleet: Fleet, run: DriverRun, removeVmId: string | null) {
    const cfg = terraformFleetConfig.parse(fleet.config);
    if (!fleet.image) throw new Error(`fleet ${fleet.name} has no container image`);
    if (!/^https?:\/\//.test(this.o.serverUrl))
      throw new Error(
        "LABLINK_PUBLIC_URL is not set: cloud VMs' agents would not know where to reach the server",
      );
    // Checked here, before Terraform runs, as well as at fleet creation: a worker started without
    // it must not boot VMs whose bootstrap would have no agent to pull.
    if (!fleet.clientImageCompat && !this.o.agentImage)
      throw new Error(
        "LABLINK_AGENT_IMAGE is not set on the worker: terraform fleets' VMs would have no agent " +
          "image to run (build and push it with scripts/build-images.sh; see docs/deploy-aws.md)",
      );
    this.region(fleet);

    // Which rows to create and retire is the domain's decision (server/domain/convergence.ts).
    const plan = await this.o.ledger.converge(fleet, { removeVmId });
    for (const vm of plan.leaving) run.log(`${vm.name} will be terminated`);
    if (plan.created.length > 0)
      run.log(`creating ${plan.created.length} VM(s): ${plan.created.join(", ")}`);
    const members = plan.keep;

    const dir = await this.prepare(fleet, run);
    try {
      // A run that died after creating instances left them in the state: adopt them first, so
      // they keep the token they booted with instead of being handed a new one.
      await this.adopt(fleet, await this.outputs(dir, run), members, run);
      const fresh = await this.rows(fleet);
      const byId = new Map(fresh.map((v) => [v.id, v]));
      const template = readUserDataTemplate(this.o.moduleDir);
      const entries: { vm: Vm; token: string }[] = [];
      for (const m of members) {
        const vm = byId.get(m.id) ?? m;
        let token = "";
        if (!vm.providerId) {
          // Earlier tokens stay valid: a killed run's Terraform may still be creating this VM's
          // instance with the token it was given (Terraform outlives a SIGKILLed worker). The
          // first token the VM uses retires the others (server/auth/agent-tokens.ts).
          token = await this.o.ledger.launchToken(vm.id, { keepOthers: true });
          run.secret(token);
          const size = renderUserData(template, {
            serverUrl: this.o.serverUrl,
            vmId: vm.id,
            agentToken: token,
            agentImage: this.o.agentImage ?? "",
            containerImage: fleet.image,
            tutorialRepo: cfg.tutorialRepo ?? "",
            startupScript: cfg.startupScript ?? "",
            startupOnError: cfg.startupOnError,
            researchUser: cfg.sshUser ?? DEFAULT_SSH_USER,
            vmName: vm.name,
            clientImageCompat: fleet.clientImageCompat,
            subjectSoftware: cfg.subjectSoftware ?? "",
          }).length;
          if (size > USER_DATA_LIMIT)
            throw new Error(
              `the VM bootstrap is ${size} bytes, over EC2's ${USER_DATA_LIMIT}-byte user data limit; shorten the startup script`,
            );
        }
        entries.push({ vm, token });
      }
      await this.writeVars(fleet, dir, entries);
      const progress = { done: 0, total: 0 };
      await this.o.runner.run(
        dir,
        ["plan", "-input=false", "-json", `-var-file=${VAR_FILE}`, `-out=${PLAN_FILE}`],
        run,
        { json: true, progress },
      );
      await this.o.runner.run(
        dir,
        ["apply", "-input=false", "-json", "-auto-approve", PLAN_FILE],
        run,
        { json: true, progress },
      );
      const out = await this.outputs(dir, run);
      await this.adopt(fleet, out, members, run);
      const missing = members.filter((m) => !out[m.name]);
      if (missing.length)
        throw new Error(
          `terraform output has no instance for ${missing.map((m) => m.name).join(", ")}`,
        );
    } finally {
      this.cleanup(dir);
    }
    const gone = (await this.rows(fleet)).filter((v) => v.state === "terminating");
    for (const vm of gone) {
      await this.o.ledger.terminated(vm.id);
      run.log(`${vm.name} terminated`);
    }
    run.log(`${fleet.name}: ${members.length} VM(s) in the fleet`);
  }

  /** Reports instance ids and addresses from the outputs; new instances start booting. */
  private async adopt(fleet: Fleet, out: VmOutputs, members: Vm[], run: DriverRun) {
    for (const m of members) {
      const o = out[m.name];
      if (!o || o.vm_id !== m.id) continue;
      const seen = {
        providerId: o.instance_id,
        privateIp: o.private_ip ?? null,
        publicIp: o.public_ip ?? null,
      };
      const change = await this.o.ledger.launched(m.id, seen, {
        fleet: fleet.name,
        instanceId: o.instance_id,
      });
      if (change === "booting") run.log(`${m.name}: instance ${o.instance_id} booting`);
    }
  }

  private async outputs(dir: string, run: DriverRun): Promise<VmOutputs> {
    const text = await this.o.runner.run(dir, ["output", "-json"], run, { capture: true });
    const parsed = outputsSchema.safeParse(JSON.parse(text.trim() || "{}"));
    if (!parsed.success) throw new Error("terraform output -json is not what the module outputs");
    return parsed.data.vms?.value ?? {};
  }

  /** The fleet's working folder: a fresh copy of the module, the backend, `terraform init`. */
  private async prepare(fleet: Fleet, run: DriverRun): Promise<string> {
    const dir = path.join(this.o.workDir, fleet.id);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const f of readdirSync(this.o.moduleDir)) {
      if (f.endsWith(".tf") || f.endsWith(".tftpl"))
        copyFileSync(path.join(this.o.moduleDir, f), path.join(dir, f));
    }
    writeFileSync(path.join(dir, "backend.tf"), backendHcl(this.o.backend, fleet), { mode: 0o600 });
    await this.o.runner.run(dir, ["init", "-input=false", "-no-color"], run);
    return dir;
  }

  /** The variables file: the only place tokens are written, mode 0600, removed after the run. */
  private async writeVars(fleet: Fleet, dir: string, entries: { vm: Vm; token: string }[]) {
    const cfg = terraformFleetConfig.parse(fleet.config);
    const vars = {
      fleet_name: fleet.name,
      vm_ids: Object.fromEntries(entries.map((e) => [e.vm.name, e.vm.id])),
      agent_tokens: Object.fromEntries(entries.map((e) => [e.vm.name, e.token])),
      region: fleet.region,
      instance_type: fleet.instanceType,
      ami_id: cfg.ami ?? null,
      subnet_id: cfg.subnetId ?? null,
      vpc_id: cfg.vpcId ?? null,
      root_volume_gb: cfg.rootVolumeGb,
      key_name: cfg.keyName ?? null,
      allowed_ssh_cidrs: cfg.allowedSshCidrs,
      container_image: fleet.image ?? "",
      agent_image: this.o.agentImage ?? "",
      tutorial_repo: cfg.tutorialRepo ?? "",
      startup_script: cfg.startupScript ?? "",
      startup_on_error: cfg.startupOnError,
      client_image_compat: fleet.clientImageCompat,
      subject_software: cfg.subjectSoftware ?? "",
      // The same account the portal's ssh command names.
      research_user: cfg.sshUser ?? DEFAULT_SSH_USER,
      server_url: this.o.serverUrl,
      tags: cfg.tags,
    };
    writeFileSync(path.join(dir, VAR_FILE), JSON.stringify(vars, null, 2), { mode: 0o600 });
  }

  private cleanup(dir: string) {
    for (const f of [VAR_FILE, PLAN_FILE]) rmSync(path.join(dir, f), { force: true });
  }
}

/** Escapes a value for a quoted HCL string. */
const hclString = (s: string) => JSON.stringify(s).replaceAll("${", "$${").replaceAll("%{", "%%{");

export function backendHcl(b: TerraformBackend, fleet: Fleet): string {
  if (b.kind === "local") {
    return `# Generated by LabLink: this fleet's state stays in this folder.\nterraform {\n  backend "local" {\n    path = "terraform.tfstate"\n  }\n}\n`;
  }
  const lines = [
    `bucket  = ${hclString(b.bucket)}`,
    `key     = ${hclString(`lablink/fleets/${fleet.id}/terraform.tfstate`)}`,
    `encrypt = true`,
  ];
  const region = b.region ?? fleet.region;
  if (region) lines.push(`region  = ${hclString(region)}`);
  // DynamoDB locking when a table is named; otherwise S3's own lock file (Terraform ≥ 1.10).
  lines.push(b.lockTable ? `dynamodb_table = ${hclString(b.lockTable)}` : "use_lockfile = true");
  return `# Generated by LabLink: one state object per fleet.\nterraform {\n  backend "s3" {\n${lines.map((l) => `    ${l}`).join("\n")}\n  }\n}\n`;
}
