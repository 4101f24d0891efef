import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { createTRPCClient, httpLink } from "@trpc/client";
import superjson from "superjson";
import type { AgentApi } from "../../server/api/routers/agent";
import pkg from "../package.json" with { type: "json" };
import { toTransportError } from "./client";
import { writeSecretFile } from "./credential";
import { nodeHttpFetch } from "./http-fetch";
import { createLogger, LOG_LEVELS } from "./log";
import { PROTOCOL_VERSION } from "./loop";
import * as z from "./zod";

/**
 * Enrollment of bring-your-own machines (`lablink-agent --enroll TOKEN`, or `npm run enroll`): exchanges an enrollment token (from the
 * admin) for this machine's own VM record and agent token, once. Writes the agent token to
 * LABLINK_AGENT_TOKEN_FILE (mode 0600) and `LABLINK_VM_ID=<id>` to LABLINK_ENROLLED_ENV_FILE,
 * which the agent's service unit then loads. Already enrolled (both files exist): does nothing.
 */
const envSchema = z.object({
  LABLINK_SERVER_URL: z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }),
  LABLINK_ENROLLMENT_TOKEN: z.string().check(z.trim(), z.minLength(1, "is required")),
  LABLINK_AGENT_TOKEN_FILE: z.string().check(z.minLength(1, "is required")),
  LABLINK_ENROLLED_ENV_FILE: z.string().check(z.minLength(1, "is required")),
  LOG_LEVEL: z._default(z.enum(LOG_LEVELS), "info"),
});

function writeAtomic(path: string, text: string) {
  mkdirSync(dirname(path), { recursive: true });
  writeSecretFile(path, text);
}

export async function enroll(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const parsed = envSchema.safeParse(
    Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === "" ? undefined : v])),
  );
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${String(i.path[0])}: ${i.message}`);
    process.stderr.write(`lablink-agent enroll: invalid configuration:\n${lines.join("\n")}\n`);
    return 2;
  }
  const e = parsed.data;
  const log = createLogger({ level: e.LOG_LEVEL });
  if (existsSync(e.LABLINK_AGENT_TOKEN_FILE) && existsSync(e.LABLINK_ENROLLED_ENV_FILE)) {
    const vm = /LABLINK_VM_ID=(\S+)/.exec(readFileSync(e.LABLINK_ENROLLED_ENV_FILE, "utf8"))?.[1];
    log.info("already enrolled", { vmId: vm });
    return 0;
  }
  const client = createTRPCClient<AgentApi>({
    links: [
      httpLink({
        url: `${e.LABLINK_SERVER_URL.replace(/\/+$/, "")}/api/trpc`,
        transformer: superjson,
        headers: () => ({ authorization: `Bearer ${e.LABLINK_ENROLLMENT_TOKEN}` }),
        fetch: nodeHttpFetch as unknown as typeof fetch,
      }),
    ],
  });
  try {
    // Imported, not read from disk: in the bundle there is no package.json beside the file.
    const agentVersion = pkg.version;
    const reply = await client.agent.enroll.mutate({
      hostname: hostname().slice(0, 255) || "unknown",
      agentVersion: String(agentVersion ?? "unknown"),
      protocolVersion: PROTOCOL_VERSION,
    });
    writeAtomic(e.LABLINK_AGENT_TOKEN_FILE, `${reply.token}\n`);
    writeAtomic(e.LABLINK_ENROLLED_ENV_FILE, `LABLINK_VM_ID=${reply.vmId}\n`);
    log.info("enrolled", { vmId: reply.vmId, name: reply.name });
    return 0;
  } catch (err) {
    const failure = toTransportError(err);
    log.error("enrollment failed", {
      kind: failure.kind,
      status: failure.status,
      message: failure.message,
    });
    return failure.kind === "unavailable" ? 75 : 1;
  }
}

/** Where enrollment keeps its files when the variables are not set (as the systemd unit does). */
export const DEFAULT_STATE_DIR = "/var/lib/lablink-agent";

/**
 * `lablink-agent --enroll TOKEN`: enroll once (nothing to do when already enrolled), then return
 * the environment the agent runs with — this machine's VM id and token file, and no enrollment
 * token (it is spent, and must not reach child processes or logs).
 */
export async function enrollThenRun(
  env: NodeJS.ProcessEnv,
): Promise<{ code: 0; env: NodeJS.ProcessEnv } | { code: number; env?: undefined }> {
  const stateDir = env.LABLINK_STATE_DIR || DEFAULT_STATE_DIR;
  const withFiles: NodeJS.ProcessEnv = {
    ...env,
    LABLINK_STATE_DIR: stateDir,
    LABLINK_AGENT_TOKEN_FILE: env.LABLINK_AGENT_TOKEN_FILE || join(stateDir, "agent.token"),
    LABLINK_ENROLLED_ENV_FILE: env.LABLINK_ENROLLED_ENV_FILE || join(stateDir, "enrolled.env"),
  };
  const code = await enroll(withFiles);
  if (code !== 0) return { code };
  const vmId = /LABLINK_VM_ID=(\S+)/.exec(
    readFileSync(withFiles.LABLINK_ENROLLED_ENV_FILE as string, "utf8"),
  )?.[1];
  const { LABLINK_ENROLLMENT_TOKEN: _spent, LABLINK_AGENT_TOKEN: _unused, ...rest } = withFiles;
  return { code: 0, env: { ...rest, ...(vmId ? { LABLINK_VM_ID: vmId } : {}) } };
}
