import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { type Api, apiClient, describeError, UsageError } from "./client";
import { csv, table } from "./output";

/**
 * `lablink`: LabLink's admin API from a terminal or a script, authenticated with a personal API
 * token (LABLINK_TOKEN) against a server (LABLINK_URL). Every command calls the same tRPC
 * procedures as the web app; none holds domain logic of its own. Exit codes: 0 done, 1 the server
 * (or the operation) said no, 2 the command line was wrong.
 */

type Globals = { url?: string; token?: string; json?: boolean };
type Out = { log: (s: string) => void; err: (s: string) => void };

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function int(min: number, max: number) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}.`);
    }
    return n;
  };
}

export function buildProgram(out: Out): Command {
  const program = new Command("lablink")
    .description("Manage a LabLink server from the command line (admins, with an API token).")
    .addOption(new Option("--url <url>", "LabLink server address").env("LABLINK_URL"))
    .addOption(
      new Option("--token <token>", "personal API token (llk_...); prefer the env variable").env(
        "LABLINK_TOKEN",
      ),
    )
    .option("--json", "print JSON for scripts instead of tables")
    .exitOverride()
    .configureOutput({
      writeOut: (s) => out.log(s.trimEnd()),
      writeErr: (s) => out.err(s.trimEnd()),
    })
    .showHelpAfterError();

  const globals = (cmd: Command) => cmd.optsWithGlobals<Globals>();
  const connect = (cmd: Command): Api => {
    const g = globals(cmd);
    if (!g.url)
      throw new UsageError("Set LABLINK_URL (or --url) to your LabLink server's address.");
    if (!g.token) {
      throw new UsageError(
        "Set LABLINK_TOKEN (or --token) to a personal API token; admins create them on their profile page.",
      );
    }
    return apiClient(g.url, g.token);
  };
  /** Prints `data` as JSON with --json, else the human rendering. */
  const show = (cmd: Command, data: unknown, human: () => string) =>
    out.log(globals(cmd).json ? JSON.stringify(data, null, 2) : human());

  const fleetId = async (api: Api, ref: string) => {
    if (UUID_RE.test(ref)) return ref;
    const fleet = (await api.fleet.list.query()).find((f) => f.name === ref);
    if (!fleet) throw new Error(`No fleet named "${ref}".`);
    return fleet.id;
  };
  const vmId = async (api: Api, ref: string) => {
    if (UUID_RE.test(ref)) return ref;
    const { rows } = await api.vm.list.query({ search: ref, limit: 50 });
    const vm = rows.find((v) => v.name === ref);
    if (!vm) throw new Error(`No VM named "${ref}".`);
    return vm.id;
  };
  const userId = async (api: Api, ref: string) => {
    if (UUID_RE.test(ref)) return ref;
    const { rows } = await api.user.list.query({ search: ref, limit: 50 });
    const user = rows.find((u) => u.email?.toLowerCase() === ref.toLowerCase());
    if (!user) throw new Error(`No user with the email address ${ref}.`);
    return user.id;
  };

  /**
   * Prints an operation's log from the start, and with `follow` polls until it has ended.
   * Returns false when it ended other than successfully.
   */
  const printLogs = async (cmd: Command, api: Api, operationId: string, follow: boolean) => {
    const json = globals(cmd).json;
    const intervalMs = Number(process.env.LABLINK_POLL_MS ?? 1000);
    let after = 0;
    for (;;) {
      const page = await api.operation.logs.query({ operationId, after });
      for (const l of page.lines) {
        out.log(
          json ? JSON.stringify(l) : `${l.at.toISOString()}  ${l.level.padEnd(5)}  ${l.line}`,
        );
      }
      after = page.nextCursor;
      if (page.done || !follow) {
        if (!page.done) return true;
        const op = await api.operation.get.query({ operationId });
        if (json) out.log(JSON.stringify({ operationId, status: op.status, error: op.error }));
        else out.log(`operation ${op.status}${op.error ? `: ${op.error}` : ""}`);
        return op.status === "succeeded";
      }
      if (page.lines.length === 0) await sleep(intervalMs);
    }
  };

  /** What a command that queues an operation prints, then follows it with --follow. */
  const operationStarted = async (
    cmd: Command,
    api: Api,
    result: {
      operation: { id: string; kind: string; status: string } | null;
      /** byo fleets: the enrollment token for the machines still missing (shown once). */
      enrollment?: { token: string; maxUses: number; expiresAt: Date } | null;
    },
    extra: Record<string, unknown> = {},
  ) => {
    const { operation, enrollment } = result;
    const rest = Object.fromEntries(
      Object.entries(result).filter(([k]) => k !== "operation" && k !== "enrollment"),
    );
    show(cmd, { ...extra, ...rest, operation, ...(enrollment ? { enrollment } : {}) }, () =>
      [
        ...Object.entries({ ...extra, ...rest }).map(([k, v]) => `${k}: ${v}`),
        operation
          ? `operation ${operation.id} (${operation.kind}) ${operation.status}`
          : "done (a bring-your-own fleet needs no operation)",
        ...(enrollment
          ? [
              `enrollment token for ${enrollment.maxUses} machine(s), until ${enrollment.expiresAt.toISOString()} (shown once):`,
              enrollment.token,
            ]
          : []),
      ].join("\n"),
    );
    if (operation && cmd.opts<{ follow?: boolean }>().follow) {
      if (!(await printLogs(cmd, api, operation.id, true))) process.exitCode = 1;
    }
  };

  // ---- fleet ----
  const fleet = program.command("fleet").description("list, create, scale and destroy fleets");
  fleet
    .command("list")
    .description("fleets with their size and VM counts")
    .action(async (_o, cmd: Command) => {
      const fleets = await connect(cmd).fleet.list.query();
      show(cmd, fleets, () =>
        table(
          ["name", "driver", "instance type", "status", "size", "ready", "claimed", "id"],
          fleets.map((f) => [
            f.name,
            f.driver,
            f.instanceType,
            f.status,
            f.desiredSize,
            f.vmCounts.ready ?? 0,
            f.vmCounts.claimed ?? 0,
            f.id,
          ]),
        ),
      );
    });
  fleet
    .command("create <name>")
    .description("create a fleet and queue the operation that provisions its VMs")
    .addOption(
      new Option("--driver <driver>", "where its VMs run")
        .choices(["terraform", "local", "byo"])
        .makeOptionMandatory(),
    )
    .requiredOption("--instance-type <type>", "e.g. g5.xlarge (local.sim for the local driver)")
    .requiredOption("--size <n>", "how many VMs", int(0, 200))
    .option("--gpu-model <model>", "shown to researchers, e.g. NVIDIA A10G")
    .option("--gpu-count <n>", "GPUs per VM", int(0, 16))
    .option("--region <region>", "AWS region (terraform)")
    .option("--image <ami>", "machine image (terraform)")
    .option("--max-hold-minutes <n>", "hold limit", int(15, 43_200))
    .option("--idle-release-minutes <n>", "release VMs idle this long", int(10, 10_080))
    .option("--gpu-hours-per-week <n>", "weekly quota per researcher", int(1, 10_000))
    .option("--group <id...>", "only members of these groups may claim")
    .option("--root-for-researchers", "give researchers sudo (VMs are replaced on release)")
    .option("--follow", "follow the operation's log until it ends")
    .action(async (name: string, o, cmd: Command) => {
      const api = connect(cmd);
      const common = {
        name,
        instanceType: o.instanceType as string,
        size: o.size as number,
        gpuModel: o.gpuModel as string | undefined,
        gpuCount: o.gpuCount as number | undefined,
        maxHoldMinutes: o.maxHoldMinutes as number | undefined,
        idleReleaseMinutes: o.idleReleaseMinutes as number | undefined,
        gpuHoursPerWeek: o.gpuHoursPerWeek as number | undefined,
        groupIds: o.group as string[] | undefined,
        rootForResearchers: Boolean(o.rootForResearchers),
      };
      let result: Awaited<ReturnType<typeof api.fleet.create.mutate>>;
      if (o.driver === "terraform") {
        if (!o.region || !o.image) {
          throw new UsageError("A terraform fleet needs --region and --image.");
        }
        result = await api.fleet.create.mutate({
          driver: "terraform",
          ...common,
          region: o.region as string,
          image: o.image as string,
        });
      } else if (o.driver === "byo") {
        result = await api.fleet.create.mutate({ driver: "byo", ...common });
      } else {
        result = await api.fleet.create.mutate({ driver: "local", ...common });
      }
      await operationStarted(cmd, api, result, { fleetId: result.fleetId });
    });
  fleet
    .command("scale")
    .description("change a fleet's size")
    .argument("<fleet>", "name or id")
    .argument("<size>", "how many VMs", int(0, 200))
    .option("--follow", "follow the operation's log until it ends")
    .action(async (ref: string, size: number, _o, cmd: Command) => {
      const api = connect(cmd);
      const result = await api.fleet.scale.mutate({ fleetId: await fleetId(api, ref), size });
      await operationStarted(cmd, api, result);
    });
  fleet
    .command("destroy <fleet>")
    .description("remove a fleet and all its VMs")
    .option("--yes", "confirm: every VM of the fleet is terminated")
    .option("--follow", "follow the operation's log until it ends")
    .action(async (ref: string, o, cmd: Command) => {
      if (!o.yes) throw new UsageError(`Destroying terminates every VM of ${ref}; add --yes.`);
      const api = connect(cmd);
      const result = await api.fleet.destroy.mutate({ fleetId: await fleetId(api, ref) });
      await operationStarted(cmd, api, result);
    });

  // ---- vm ----
  const vm = program.command("vm").description("list VMs, drain, release, reboot, terminate");
  vm.command("list")
    .description("VMs (not terminated ones unless --all)")
    .option("--fleet <fleet>", "only this fleet (name or id)")
    .option("--state <state...>", "only these states")
    .option("--all", "include terminated VMs")
    .option("--limit <n>", "at most this many", int(1, 500), 100)
    .action(async (o, cmd: Command) => {
      const api = connect(cmd);
      const { rows, total } = await api.vm.list.query({
        fleetId: o.fleet ? await fleetId(api, o.fleet) : undefined,
        states: o.state,
        includeTerminated: Boolean(o.all),
        limit: o.limit,
      });
      show(cmd, { rows, total }, () =>
        [
          table(
            ["name", "fleet", "state", "healthy", "holder", "last heartbeat", "id"],
            rows.map((v) => [
              v.name,
              v.fleet.name,
              v.state,
              v.healthy,
              v.holder?.email ?? null,
              v.lastHeartbeatAt,
              v.id,
            ]),
          ),
          ...(total > rows.length ? [`(${rows.length} of ${total}; use --limit)`] : []),
        ].join("\n"),
      );
    });
  const vmAction = (
    name: string,
    description: string,
    run: (api: Api, id: string) => Promise<{ vmId: string; state: string }>,
  ) =>
    vm
      .command(`${name} <vm>`)
      .description(description)
      .action(async (ref: string, _o, cmd: Command) => {
        const api = connect(cmd);
        const result = await run(api, await vmId(api, ref));
        show(cmd, result, () => `${result.vmId}: ${result.state}`);
      });
  vmAction("drain", "let the VM finish its hold, then take it out of service", (api, id) =>
    api.vm.drain.mutate({ vmId: id }),
  );
  vmAction("release", "take the VM back from its holder now", (api, id) =>
    api.vm.forceRelease.mutate({ vmId: id }),
  );
  vm.command("reboot <vm>")
    .description("restart the VM (a held VM comes back to its holder)")
    .option("--follow", "follow the operation's log until it ends")
    .action(async (ref: string, _o, cmd: Command) => {
      const api = connect(cmd);
      await operationStarted(cmd, api, await api.vm.reboot.mutate({ vmId: await vmId(api, ref) }));
    });
  vm.command("terminate <vm>")
    .description("remove the VM for good (the fleet shrinks by one)")
    .option("--yes", "confirm")
    .option("--follow", "follow the operation's log until it ends")
    .action(async (ref: string, o, cmd: Command) => {
      if (!o.yes) throw new UsageError(`Terminating removes ${ref} for good; add --yes.`);
      const api = connect(cmd);
      await operationStarted(
        cmd,
        api,
        await api.vm.terminate.mutate({ vmId: await vmId(api, ref) }),
      );
    });

  // ---- operation ----
  const operation = program.command("operation").description("fleet and VM operations");
  operation
    .command("list")
    .description("recent operations, newest first")
    .option("--limit <n>", "at most this many", int(1, 200), 20)
    .action(async (o, cmd: Command) => {
      const { rows } = await connect(cmd).operation.list.query({ limit: o.limit });
      show(cmd, rows, () =>
        table(
          ["created", "kind", "fleet", "status", "id"],
          rows.map((r) => [r.createdAt, r.kind, r.fleetName, r.status, r.id]),
        ),
      );
    });
  operation
    .command("logs <operationId>")
    .description("an operation's log; with --follow, until it ends (exit 1 if it did not succeed)")
    .option("--follow", "keep printing new lines until the operation ends")
    .action(async (id: string, o, cmd: Command) => {
      if (!UUID_RE.test(id)) throw new UsageError("Give the operation's id (a UUID).");
      const ok = await printLogs(cmd, connect(cmd), id, Boolean(o.follow));
      if (!ok) process.exitCode = 1;
    });

  // ---- usage ----
  program
    .command("usage")
    .description("usage reports")
    .command("export")
    .description("hours and GPU-hours held per researcher (or per fleet)")
    .option("--days <n>", "the last n days", int(1, 365), 30)
    .addOption(new Option("--by <what>", "rows per").choices(["user", "fleet"]).default("user"))
    .option("--csv", "CSV for spreadsheets")
    .action(async (o, cmd: Command) => {
      const report = await connect(cmd).usage.report.query({ days: o.days });
      const [headers, rows] =
        o.by === "fleet"
          ? [
              ["fleet", "holds", "hours", "gpu_hours"],
              report.fleets.map((f) => [f.fleet, f.holds, f.hours, f.gpuHours]),
            ]
          : [
              ["email", "name", "holds", "hours", "gpu_hours", "holding_now"],
              report.users.map((u) => [
                u.email,
                u.name,
                u.holds,
                u.hours,
                u.gpuHours,
                u.holdingNow,
              ]),
            ];
      if (o.csv) out.log(csv(headers, rows));
      else show(cmd, report, () => table(headers, rows));
    });

  // ---- enroll-token ----
  program
    .command("enroll-token")
    .description("enrollment tokens for bring-your-own machines")
    .command("create")
    .description("a token an agent uses once (or --max-uses times) to join a byo fleet")
    .requiredOption("--fleet <fleet>", "the bring-your-own fleet (name or id)")
    .option("--max-uses <n>", "machines that may enroll with it", int(1, 1000), 1)
    .option("--expires-in-hours <n>", "valid this long (at most 30 days)", int(1, 720), 24)
    .option("--label <text>", "a note for the list")
    .action(async (o, cmd: Command) => {
      const api = connect(cmd);
      const created = await api.enrollment.create.mutate({
        fleetId: await fleetId(api, o.fleet),
        maxUses: o.maxUses,
        expiresInS: o.expiresInHours * 3600,
        label: o.label,
      });
      show(cmd, created, () =>
        [
          created.token,
          `(shown once; ${created.maxUses} use(s), expires ${created.expiresAt.toISOString()})`,
        ].join("\n"),
      );
    });

  // ---- user ----
  const user = program.command("user").description("users and roles");
  for (const [name, role] of [
    ["promote", "admin"],
    ["demote", "researcher"],
  ] as const) {
    user
      .command(`${name} <user>`)
      .description(`make a user (email or id) ${role === "admin" ? "an admin" : "a researcher"}`)
      .action(async (ref: string, _o, cmd: Command) => {
        const api = connect(cmd);
        const result = await api.user.setRole.mutate({ userId: await userId(api, ref), role });
        show(cmd, result, () => `${ref} is now ${role === "admin" ? "an admin" : "a researcher"}`);
      });
  }

  // ---- config ----
  program
    .command("config")
    .description("the server's configuration")
    .command("check")
    .description("check this environment as the server would at start; print every problem")
    .action(async (_o, cmd: Command) => {
      // Loaded here: the other commands run without the server's modules.
      const { parseEnv, EnvError } = await import("../server/env");
      try {
        parseEnv(process.env);
      } catch (e) {
        if (!(e instanceof EnvError)) throw e;
        const problems = e.message
          .split("\n")
          .filter((l) => l.startsWith("  "))
          .map((l) => l.trim());
        if (globals(cmd).json) out.log(JSON.stringify({ ok: false, problems }, null, 2));
        else out.err(e.message);
        process.exitCode = 1;
        return;
      }
      show(cmd, { ok: true, problems: [] }, () => "Configuration OK.");
    });

  return program;
}

/** Runs the CLI; resolves to the exit code. */
export async function main(
  argv: string[],
  out: Out = { log: (s) => console.log(s), err: (s) => console.error(s) },
): Promise<number> {
  const program = buildProgram(out);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here too, successfully.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof UsageError) {
      out.err(`lablink: ${err.message}`);
      return 2;
    }
    out.err(`lablink: ${describeError(err, program.opts<Globals>().url)}`);
    return 1;
  }
}
