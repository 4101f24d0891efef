import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Auth } from "@auth/core";
import { eq } from "drizzle-orm";
import nodemailer from "nodemailer";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildAuthConfig } from "../../server/auth/options";
import { vmLogs, vms } from "../../server/db/schema";
import { parseEnv } from "../../server/env";
import { logger } from "../../server/log";
import { apiClient } from "../api/harness";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, tokenSecret } from "../fixtures";
import { startApiServer } from "../http";

/**
 * A full flow at the most verbose log level, with every log line captured: the server's (pino) and
 * a real agent's. Afterwards no token, code or link used in the flow may appear in any line.
 */
let t: TestDatabase;
let server: Awaited<ReturnType<typeof startApiServer>>;
let agent: ChildProcess | undefined;
const serverLog: string[] = [];
let agentLog = "";
const secrets = new Set<string>();
const dir = mkdtempSync(path.join(os.tmpdir(), "lablink-secrets-"));

type Stream = { write: (s: string) => unknown };
const stream = (logger as unknown as Record<symbol, Stream>)[pino.symbols.streamSym] as Stream;
const originalWrite = stream.write;
const originalLevel = logger.level;

/** A token and, for agent and enrollment tokens, its secret part must both stay out of logs. */
const remember = (token: string) => {
  secrets.add(token);
  if (/^ll[ae]_/.test(token)) secrets.add(tokenSecret(token));
};

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${agentLog}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  stream.write = (s: string) => serverLog.push(s);
  logger.level = "trace";
  t = await createTestDatabase();
  server = await startApiServer(t.db, t.sql, 1);
});
afterAll(async () => {
  stream.write = originalWrite;
  logger.level = originalLevel;
  agent?.kill("SIGKILL");
  await server?.close();
  await t?.drop();
});

describe("secrets in logs", () => {
  it("no token, code or sign-in link used in a full flow appears in any log line", async () => {
    const api = apiClient(t.db);
    const authSecret = "s3cret-".repeat(8);
    secrets.add(authSecret);

    // Email sign-in: request a link, follow it, read the session.
    const mails: string[] = [];
    const transport = nodemailer.createTransport({ jsonTransport: true });
    const config = buildAuthConfig({
      db: t.db,
      env: parseEnv({
        AUTH_SECRET: authSecret,
        LABLINK_SMTP_URL: "smtp://mail.example.edu",
        LABLINK_PUBLIC_URL: "https://lablink.example.edu",
        LABLINK_EMAIL_FROM: "lablink@example.edu",
        LABLINK_ADMIN_EMAILS: "admin@example.edu",
      }),
      mailer: {
        async sendMail(m) {
          const info = await transport.sendMail(m);
          mails.push(JSON.parse(info.message as unknown as string).text);
          return info;
        },
      },
    });
    let cookies = "";
    const auth = async (url: string, init: RequestInit = {}) => {
      const res = await Auth(
        new Request(`http://localhost:3000${url}`, {
          ...init,
          headers: { ...(init.headers as object), cookie: cookies },
          redirect: "manual",
        }),
        config,
      );
      for (const c of res.headers.getSetCookie()) {
        const pair = c.split(";")[0] ?? "";
        cookies = [cookies, pair].filter(Boolean).join("; ");
        remember(pair.slice(pair.indexOf("=") + 1));
      }
      return res;
    };
    const { csrfToken } = (await (await auth("/api/auth/csrf")).json()) as { csrfToken: string };
    remember(csrfToken);
    await auth("/api/auth/signin/email", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ email: "admin@example.edu", csrfToken }),
    });
    const link = /(http:\/\/\S+callback\/email\S+)/.exec(mails[0] ?? "")?.[1] as string;
    secrets.add(link);
    remember(new URL(link).searchParams.get("token") as string);
    await auth(link.replace("http://localhost:3000", ""));
    const session = (await (await auth("/api/auth/session")).json()) as {
      user: { id: string; role: string };
    };
    expect(session.user.role).toBe("admin");
    const adminId = session.user.id;

    // Admin makes an enrollment token; a machine enrolls with it and gets its agent token.
    const byo = await makeFleet(t.db, { driver: "byo", gpuModel: "NVIDIA A10G", gpuCount: 1 });
    const created = await api.mutate(
      "enrollment.create",
      { fleetId: byo.id, maxUses: 1 },
      { userId: adminId },
    );
    const enrollmentToken = (created.data as { token: string }).token;
    remember(enrollmentToken);
    const enrolled = await api.mutate(
      "agent.enroll",
      { hostname: "lab-ws", agentVersion: "0.1.0", protocolVersion: 1 },
      { authorization: `Bearer ${enrollmentToken}` },
    );
    const { vmId, token } = enrolled.data as { vmId: string; token: string };
    remember(token);
    // Refused calls are logged too: a reused enrollment token, a forged agent token.
    await api.mutate(
      "agent.enroll",
      { hostname: "again", agentVersion: "0.1.0", protocolVersion: 1 },
      { authorization: `Bearer ${enrollmentToken}` },
    );
    await api.query("agent.poll", { vmId, waitMs: 0 }, { authorization: `Bearer ${token}x` });

    // The real agent runs with it from a file, rotates it, and serves a claim and a release.
    const tokenFile = path.join(dir, "agent.token");
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    agent = spawn(
      process.execPath,
      ["--import", "tsx", path.resolve(import.meta.dirname, "../../agent/src/main.ts")],
      {
        env: {
          PATH: process.env.PATH,
          NODE_ENV: "test",
          LABLINK_SERVER_URL: server.url,
          LABLINK_AGENT_TOKEN_FILE: tokenFile,
          LABLINK_VM_ID: vmId,
          LABLINK_SIMULATE_GPU: "NVIDIA A10G:1",
          LABLINK_STATE_DIR: dir,
          LABLINK_HEARTBEAT_S: "0.3",
          LABLINK_POLL_WAIT_MS: "1000",
          LABLINK_LOG_FLUSH_S: "0.2",
          LOG_LEVEL: "debug",
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    agent.stdout?.on("data", (d) => {
      agentLog += d;
    });
    agent.stderr?.on("data", (d) => {
      agentLog += d;
    });
    const rotated = await waitFor("rotation", async () => {
      const now = readFileSync(tokenFile, "utf8").trim();
      return now !== token && now;
    });
    remember(rotated);
    await waitFor("ready", async () => {
      const [vm] = await t.db.select().from(vms).where(eq(vms.id, vmId));
      return vm?.state === "ready";
    });
    const researcher = await makeUser(t.db);
    expect((await api.mutate("vm.claim", {}, { userId: researcher.id })).status).toBe(200);
    await waitFor("assignment delivered", async () => {
      const [vm] = await t.db.select().from(vms).where(eq(vms.id, vmId));
      return vm?.assignmentAckedId && vm.assignmentAckedId === vm.assignmentId;
    });
    await api.mutate("vm.release", undefined, { userId: researcher.id });
    await waitFor("wiped", async () => {
      const [vm] = await t.db.select().from(vms).where(eq(vms.id, vmId));
      return vm?.state === "ready";
    });

    // The lines the agent shipped to the server (agent.logs) are logs too.
    const shipped = await waitFor("the agent's lines on the server", async () => {
      const rows = await t.db.select().from(vmLogs).where(eq(vmLogs.vmId, vmId));
      return rows.some((r) => r.message.startsWith("agent token rotated")) && rows;
    });
    // The flow was logged (otherwise this test would prove nothing)...
    expect(serverLog.length).toBeGreaterThan(0);
    expect(agentLog).toContain("agent token rotated");
    expect(agentLog).toContain("registered");
    // ...and no secret is in it.
    const everything =
      serverLog.join("") + agentLog + shipped.map((r) => `${r.message}\n`).join("");
    expect(secrets.size).toBeGreaterThanOrEqual(10);
    for (const s of secrets) {
      expect(everything.includes(s), `a secret (${s.slice(0, 6)}…) is in the logs`).toBe(false);
    }
  });
});
