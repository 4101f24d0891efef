import { parseArgs } from "node:util";
import { ConfigError } from "./config";

export const USAGE = `Usage: lablink-agent --server URL --vm-id UUID --token-file PATH [options]
       lablink-agent --server URL --enroll TOKEN [options]     (bring-your-own machine)

The LabLink VM agent: registers this VM with the LabLink server, reports GPU health and usage,
and acts on the server's commands (set up a researcher, remote-desktop hand-off, wipe).

Options (each overrides its environment variable):
  --server URL         LabLink server URL                        LABLINK_SERVER_URL
  --vm-id UUID         this VM's id                              LABLINK_VM_ID
  --token-file PATH    file holding this VM's token (preferred)  LABLINK_AGENT_TOKEN_FILE
  --token TOKEN        the token itself (visible in ps; avoid)   LABLINK_AGENT_TOKEN
  --enroll TOKEN       enroll this machine with an admin's enrollment token, once, then run:
                       writes the token file and enrolled.env (VM id) in the state dir
                       (default /var/lib/lablink-agent); already enrolled: just runs
                                                                 LABLINK_ENROLLMENT_TOKEN
  --state-dir PATH     agent state folder                        LABLINK_STATE_DIR
  --research-user NAME the researchers' Unix account             LABLINK_RESEARCH_USER
  --log-level LEVEL    debug, info, warn, error, silent          LOG_LEVEL
  --ship-logs 0|1      ship log lines to the server (default 1)  LABLINK_SHIP_LOGS
  --cloud-init-log PATH cloud-init output log, or "none"         LABLINK_CLOUD_INIT_LOG
  --container-log PATH research container log file, or "none"    LABLINK_CONTAINER_LOG
  --container-ready-file PATH  created when the container is up  LABLINK_CONTAINER_READY_FILE
  --startup-result-file PATH   the startup script's result (JSON) LABLINK_STARTUP_RESULT_FILE
  -h, --help           show this help
  -v, --version        print the agent version

Every setting is also read from the environment; see the agent README for the full list.
`;

const FLAGS = {
  server: "LABLINK_SERVER_URL",
  "vm-id": "LABLINK_VM_ID",
  "token-file": "LABLINK_AGENT_TOKEN_FILE",
  token: "LABLINK_AGENT_TOKEN",
  enroll: "LABLINK_ENROLLMENT_TOKEN",
  "state-dir": "LABLINK_STATE_DIR",
  "research-user": "LABLINK_RESEARCH_USER",
  "log-level": "LOG_LEVEL",
  "ship-logs": "LABLINK_SHIP_LOGS",
  "cloud-init-log": "LABLINK_CLOUD_INIT_LOG",
  "container-log": "LABLINK_CONTAINER_LOG",
  "container-ready-file": "LABLINK_CONTAINER_READY_FILE",
  "startup-result-file": "LABLINK_STARTUP_RESULT_FILE",
} as const;

export type CliResult =
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "run"; env: NodeJS.ProcessEnv };

/** Command-line flags on top of the environment (flags win). */
export function parseCli(argv: string[], env: NodeJS.ProcessEnv): CliResult {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        ...Object.fromEntries(Object.keys(FLAGS).map((k) => [k, { type: "string" as const }])),
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "v" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new ConfigError(`${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`);
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  const out: NodeJS.ProcessEnv = { ...env };
  for (const [flag, variable] of Object.entries(FLAGS)) {
    const v = values[flag];
    if (typeof v === "string") out[variable] = v;
  }
  return { kind: "run", env: out };
}
