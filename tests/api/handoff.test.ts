import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, crdHandoffs, type users, type Vm, vms } from "../../server/db/schema";
import { MAX_SSH_KEYS, parseSshPublicKey } from "../../server/domain/ssh-keys";
import type { AgentCommand, AgentReply } from "../../server/protocol/agent";
import { createTestDatabase, type TestDatabase } from "../db";
import { heartbeatInput as beat, makeAgent, makeFleet, makeUser, makeVms } from "../fixtures";
import { sshKey } from "../ssh-keys";
import { apiClient, tableCounts } from "./harness";

type User = typeof users.$inferSelect;
let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let ada: User;
let bob: User;
let admin: User;
const tokens = new Map<string, string>();

const CODE = "4/0AeanS0ZkQx-Example_code.value";
const COMMAND = `DISPLAY= /opt/google/chrome-remote-desktop/start-host --code="${CODE}" --redirect-url="https://remotedesktop.google.com/_/oauthredirect" --name=$(hostname)`;
const PIN = "402913";

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  ada = await makeUser(t.db, "researcher", "ada");
  bob = await makeUser(t.db, "researcher", "bob");
  admin = await makeUser(t.db, "admin");
  const fleet = await makeFleet(t.db, { gpuCount: 0 });
  for (const vm of await makeVms(t.db, fleet, 3, "ready"))
    tokens.set(vm.id, await makeAgent(t.db, vm));
});
afterAll(() => t.drop());

const as = (u: User) => ({ userId: u.id });
const agentAuth = (vmId: string) => ({ authorization: `Bearer ${tokens.get(vmId)}` });

async function register(vmId: string, protocolVersion = 2, bootId = "boot-1") {
  const res = await api.mutate(
    "agent.register",
    {
      vmId,
      bootId,
      hostname: "gpu-vm",
      agentVersion: "0.2.0",
      protocolVersion,
      gpus: [],
      health: { healthy: true, reasons: [] },
    },
    agentAuth(vmId),
  );
  expect(res.status).toBe(200);
}

async function poll(vmId: string): Promise<AgentCommand[]> {
  const res = await api.query("agent.poll", { vmId, waitMs: 0 }, agentAuth(vmId));
  expect(res.status).toBe(200);
  return (res.data as AgentReply).commands;
}

async function claim(u: User): Promise<Vm> {
  const res = await api.mutate("vm.claim", {}, as(u));
  expect(res.status).toBe(200);
  const [vm] = await t.db
    .select()
    .from(vms)
    .where(eq(vms.id, (res.data as { vmId: string }).vmId));
  return vm as Vm;
}

describe("SSH keys in the researcher's profile", () => {
  it("accepts ed25519, ECDSA P-256/384/521 and RSA ≥ 3072 with ssh-keygen's fingerprint", async () => {
    for (const kind of ["ed25519", "p256", "p384", "p521", "rsa3072"] as const) {
      const key = `${sshKey(kind)} ada@laptop`;
      const res = await api.mutate("profile.sshKeys.add", { publicKey: key }, as(ada));
      expect(res.status, JSON.stringify(res.error)).toBe(200);
      const dir = mkdtempSync(join(tmpdir(), "lablink-key-"));
      writeFileSync(join(dir, "k.pub"), `${key}\n`);
      const expected = execFileSync("ssh-keygen", ["-lf", join(dir, "k.pub")], {
        encoding: "utf8",
      });
      const added = res.data as { fingerprint: string; bits: number; label: string };
      expect(expected).toContain(added.fingerprint);
      expect(expected.startsWith(`${added.bits} `)).toBe(true);
      expect(added.label).toBe("ada@laptop");
    }
    const list = await api.query("profile.sshKeys.list", undefined, as(ada));
    expect((list.data as unknown[]).length).toBe(5);
    // The key material itself is not echoed back.
    expect(JSON.stringify(list.data)).not.toMatch(/AAAA/);
  });

  it.each([
    ["RSA under 3072 bits", () => sshKey("rsa2048"), /2048 bits; at least 3072/],
    ["DSA", () => "ssh-dss AAAAB3NzaC1kc3MAAACBAP", /Unsupported key/],
    ["options before the key", () => `command="/bin/sh" ${sshKey("ed25519")}`, /Unsupported key/],
    ["a private key", () => "-----BEGIN OPENSSH PRIVATE KEY-----", /Unsupported key/],
    ["two keys", () => `${sshKey("ed25519")}\n${sshKey("ed25519")}`, /one key, on one line/],
    ["bad base64", () => "ssh-ed25519 AAAA!!!!", /base64/],
    [
      "a blob of another type",
      () => `ssh-rsa ${sshKey("ed25519").split(" ")[1]}`,
      /does not match its type/,
    ],
    [
      "a truncated blob",
      () =>
        `ssh-ed25519 ${Buffer.from(Buffer.from(sshKey("ed25519").split(" ")[1] as string, "base64").subarray(0, 40)).toString("base64")}`,
      /truncated|32 bytes/,
    ],
    [
      "an ECDSA point off the curve",
      () => {
        const [type, b64] = sshKey("p256").split(" ") as [string, string];
        const blob = Buffer.from(b64, "base64");
        blob[blob.length - 1] = (blob[blob.length - 1] ?? 0) ^ 1;
        return `${type} ${blob.toString("base64")}`;
      },
      /not a valid public key/,
    ],
  ])("refuses %s with a clear message and writes nothing", async (_label, make, message) => {
    const before = await tableCounts(t.db);
    const res = await api.mutate("profile.sshKeys.add", { publicKey: make() }, as(bob));
    expect(res.status).toBe(400);
    expect(res.error?.message).toMatch(message);
    expect(await tableCounts(t.db)).toEqual(before);
  });

  it("a duplicate is a 409; only the owner can remove a key; at most ten keys", async () => {
    const key = sshKey("ed25519");
    const first = await api.mutate(
      "profile.sshKeys.add",
      { publicKey: key, label: "desk" },
      as(bob),
    );
    expect(first.status).toBe(200);
    expect((await api.mutate("profile.sshKeys.add", { publicKey: key }, as(bob))).status).toBe(409);
    const id = (first.data as { id: string }).id;
    expect((await api.mutate("profile.sshKeys.remove", { id }, as(ada))).status).toBe(404);
    expect((await api.mutate("profile.sshKeys.remove", { id }, as(bob))).status).toBe(200);
    for (let i = 0; i < MAX_SSH_KEYS; i++) {
      expect(
        (await api.mutate("profile.sshKeys.add", { publicKey: sshKey("ed25519") }, as(bob))).status,
      ).toBe(200);
    }
    const over = await api.mutate("profile.sshKeys.add", { publicKey: sshKey("ed25519") }, as(bob));
    expect(over.status).toBe(400);
    expect(over.error?.message).toMatch(/at most 10/);
  });

  it("parses the comment but keeps only type and blob", () => {
    const key = sshKey("ed25519");
    expect(parseSshPublicKey(`  ${key}   my laptop  `)).toMatchObject({
      algorithm: "ssh-ed25519",
      publicKey: key.split(" ")[1],
      comment: "my laptop",
      bits: 256,
    });
  });
});

describe("Chrome Remote Desktop hand-off through the API", () => {
  let vm: Vm;

  it("needs a VM", async () => {
    const res = await api.mutate("vm.connectCrd", { command: COMMAND, pin: PIN }, as(ada));
    expect(res.status).toBe(404);
  });

  it("the assign command carries the holder's SSH keys", async () => {
    vm = await claim(ada);
    await register(vm.id);
    const [assign] = await poll(vm.id);
    expect(assign).toMatchObject({ type: "assign", user: { displayName: "ada" } });
    const keys = (assign as Extract<AgentCommand, { type: "assign" }>).sshKeys ?? [];
    expect(keys).toHaveLength(5);
    for (const k of keys)
      expect(k).toMatch(/^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) [A-Za-z0-9+/]+=*$/);
  });

  it.each([
    ["no --code", "start-host --name=x"],
    ["two codes", `${COMMAND} --code="4/other-code-xyz"`],
    ["a semicolon", 'start-host --code="4/abc; rm -rf ~"'],
    ["command substitution", 'start-host --code="4/abc$(reboot)"'],
    ["backticks", "start-host --code=`reboot`"],
    ["a newline", 'start-host --code="4/abcdefgh\nreboot"'],
    ["quotes", `start-host --code="4/abc'def"`],
    ["an unquoted metacharacter", "start-host --code=4/abcdefgh;reboot"],
    ["a unicode look-alike slash", 'start-host --code="4\u22150AeanS0ZkQx"'],
    ["a fullwidth letter", 'start-host --code="4/0AeanS0Zk\uff31x"'],
    ["a zero-width space", 'start-host --code="4/0Aean\u200bS0ZkQx"'],
    ["too short", 'start-host --code="4/a"'],
  ])("refuses a command with %s, writing nothing", async (_label, command) => {
    const before = await tableCounts(t.db);
    const res = await api.mutate("vm.connectCrd", { command, pin: PIN }, as(ada));
    expect(res.status).toBe(400);
    expect(res.error?.message).toBeTruthy();
    expect(await tableCounts(t.db)).toEqual(before);
  });

  it.each(["12345", "12345a", "111111", "123456", "987654", "1234567"])(
    "refuses the PIN %s",
    async (pin) => {
      const res = await api.mutate("vm.connectCrd", { command: COMMAND, pin }, as(ada));
      expect(res.status).toBe(400);
      expect(res.error?.message).toMatch(/PIN/);
    },
  );

  it("sends the code and PIN to that VM's agent only, never shows them to anyone, and reports a failure", async () => {
    const res = await api.mutate("vm.connectCrd", { command: COMMAND, pin: PIN }, as(ada));
    expect(res.status).toBe(200);
    const { requestId } = res.data as { requestId: string };

    // The researcher sees the status, never the code; neither does an admin.
    const mine = await api.query("vm.mine", undefined, as(ada));
    expect(mine.data).toMatchObject({
      connection: { crd: { requestId, status: "pending", error: null } },
    });
    const list = await api.query("vm.list", { limit: 50 }, as(admin));
    for (const body of [mine.data, list.data]) {
      expect(JSON.stringify(body)).not.toContain(CODE);
      expect(JSON.stringify(body)).not.toContain(PIN);
    }
    // At rest it is sealed; the audit trail names only the request.
    const [row] = await t.db.select().from(crdHandoffs).where(eq(crdHandoffs.vmId, vm.id));
    expect(row?.sealed).toMatch(/^v1\./);
    expect(row?.sealed).not.toContain(CODE);
    const audit = await t.db.select().from(auditEvents);
    expect(JSON.stringify(audit)).not.toContain(CODE);

    // Only this VM's agent gets it.
    const commands = await poll(vm.id);
    expect(commands.find((c) => c.type === "connect")).toEqual({
      type: "connect",
      method: "crd",
      assignmentId: vm.assignmentId,
      requestId,
      code: CODE,
      pin: PIN,
    });
    for (const other of [...tokens.keys()].filter((id) => id !== vm.id)) {
      await register(other);
      expect(JSON.stringify(await poll(other))).not.toContain(CODE);
    }

    // start-host failed on the VM: the researcher sees why; the code is gone.
    const ack = await api.mutate(
      "agent.ack",
      {
        vmId: vm.id,
        type: "connect",
        assignmentId: vm.assignmentId,
        requestId,
        ok: false,
        error: "Chrome Remote Desktop setup failed: OAuth error: invalid_grant",
      },
      agentAuth(vm.id),
    );
    expect(ack.status).toBe(200);
    const after = await api.query("vm.mine", undefined, as(ada));
    expect(after.data).toMatchObject({
      connection: {
        crd: {
          status: "failed",
          error: "Chrome Remote Desktop setup failed: OAuth error: invalid_grant",
        },
      },
    });
    const [cleared] = await t.db.select().from(crdHandoffs).where(eq(crdHandoffs.vmId, vm.id));
    expect(cleared?.sealed).toBeNull();
    expect((await poll(vm.id)).some((c) => c.type === "connect")).toBe(false);
  });

  it("a new request supersedes the old one; a stale ack is a 409; success is shown", async () => {
    const first = await api.mutate("vm.connectCrd", { command: COMMAND, pin: PIN }, as(ada));
    const second = await api.mutate("vm.connectCrd", { command: COMMAND, pin: "502817" }, as(ada));
    const old = (first.data as { requestId: string }).requestId;
    const current = (second.data as { requestId: string }).requestId;
    const connect = (await poll(vm.id)).find((c) => c.type === "connect");
    expect(connect).toMatchObject({ requestId: current, pin: "502817" });
    const ack = (requestId: string) =>
      api.mutate(
        "agent.ack",
        { vmId: vm.id, type: "connect", assignmentId: vm.assignmentId, requestId, ok: true },
        agentAuth(vm.id),
      );
    expect((await ack(old)).status).toBe(409);
    expect((await ack(current)).status).toBe(200);
    expect((await ack(current)).status).toBe(200); // a repeated ack is fine
    const mine = await api.query("vm.mine", undefined, as(ada));
    expect(mine.data).toMatchObject({ connection: { crd: { status: "succeeded" } } });
  });

  it("an ack of a connect without its request id is a 400", async () => {
    const res = await api.mutate(
      "agent.ack",
      { vmId: vm.id, type: "connect", assignmentId: vm.assignmentId, ok: true },
      agentAuth(vm.id),
    );
    expect(res.status).toBe(400);
  });

  it("an agent speaking protocol 1 gets no connect command (it would not understand it)", async () => {
    await api.mutate("vm.connectCrd", { command: COMMAND, pin: PIN }, as(ada));
    await register(vm.id, 1);
    expect((await poll(vm.id)).some((c) => c.type === "connect")).toBe(false);
    await register(vm.id, 2);
    expect((await poll(vm.id)).some((c) => c.type === "connect")).toBe(true);
  });

  it("release forgets the hand-off", async () => {
    expect((await api.mutate("vm.release", undefined, as(ada))).status).toBe(200);
    expect(await t.db.select().from(crdHandoffs).where(eq(crdHandoffs.vmId, vm.id))).toEqual([]);
    expect(await poll(vm.id)).toEqual([{ type: "wipe", assignmentId: vm.assignmentId }]);
  });
});

describe("heartbeat: shutting down and readings queued during an outage", () => {
  it("a shutting-down agent takes its VM out of the pool until it registers again", async () => {
    const [vmId] = [...tokens.keys()].slice(-1) as [string];
    await register(vmId);
    const res = await api.mutate(
      "agent.heartbeat",
      beat(vmId, { shuttingDown: true }),
      agentAuth(vmId),
    );
    expect(res.status).toBe(200);
    const [row] = await t.db.select().from(vms).where(eq(vms.id, vmId));
    expect(row).toMatchObject({ healthy: false, healthReasons: ["agent is shutting down"] });
    // A heartbeat that was in flight when the agent stopped lands after the goodbye: it must
    // not put the VM back in the pool, and it asks the agent to register again.
    const late = await api.mutate("agent.heartbeat", beat(vmId), agentAuth(vmId));
    expect(late.status).toBe(200);
    expect(late.data).toMatchObject({ reRegister: true });
    const [still] = await t.db.select().from(vms).where(eq(vms.id, vmId));
    expect(still).toMatchObject({ healthy: false, healthReasons: ["agent is shutting down"] });
    await register(vmId);
    const [again] = await t.db.select().from(vms).where(eq(vms.id, vmId));
    expect(again).toMatchObject({ healthy: true, healthReasons: [] });
  });

  it("queued readings are recorded as one audit event with the unhealthy periods", async () => {
    const [vmId] = [...tokens.keys()].slice(-1) as [string];
    const entry = (at: string, healthy: boolean) => ({
      at,
      healthy,
      reasons: healthy ? [] : ["GPU 0: temperature 95 °C above 90 °C"],
      inUse: false,
      maxUtilizationPct: 3,
      maxTemperatureC: healthy ? 40 : 95,
    });
    const res = await api.mutate(
      "agent.heartbeat",
      beat(vmId, {
        backlog: [
          entry("2026-11-27T08:00:00.000Z", true),
          entry("2026-11-27T08:00:15.000Z", false),
          entry("2026-11-27T08:00:30.000Z", true),
        ],
        backlogDropped: 4,
      }),
      agentAuth(vmId),
    );
    expect(res.status).toBe(200);
    const events = await t.db
      .select()
      .from(auditEvents)
      .where(eq(auditEvents.action, "agent.backlog"));
    expect(events.at(-1)?.details).toMatchObject({
      count: 3,
      dropped: 4,
      from: "2026-11-27T08:00:00.000Z",
      to: "2026-11-27T08:00:30.000Z",
      unhealthy: [
        { at: "2026-11-27T08:00:15.000Z", reasons: ["GPU 0: temperature 95 °C above 90 °C"] },
      ],
      maxTemperatureC: 95,
    });
  });
});
