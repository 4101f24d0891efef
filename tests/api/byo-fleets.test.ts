/**
 * Bring-your-own fleets through the admin API: created, scaled (enrollment tokens fitted to the
 * machines still missing) and destroyed without a worker operation; reboot of a byo machine is
 * refused with a clear message; terminate takes the machine out of LabLink.
 */
import { and, eq, ne } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyAgentToken } from "../../server/auth/agent-tokens";
import { enrollMachine, verifyEnrollmentToken } from "../../server/auth/enrollment";
import { enrollmentTokens, fleets, operations, vms } from "../../server/db/schema";
import { commandsFor } from "../../server/domain/agents";
import { finishByoRemovals } from "../../server/domain/byo";
import { systemActor } from "../../server/domain/vm-state";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser } from "../fixtures";
import { apiClient } from "./harness";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let admin: { id: string };

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  admin = await makeUser(t.db, "admin");
});
afterAll(() => t.drop());

const as = () => ({ userId: admin.id });
const name = () => `byo-${crypto.randomUUID().slice(0, 6)}`;

async function createByo(size: number) {
  const res = await api.mutate(
    "fleet.create",
    { driver: "byo", name: name(), gpuModel: "RTX 4090", size },
    as(),
  );
  expect(res.status, JSON.stringify(res.error)).toBe(200);
  return res.data as {
    fleetId: string;
    operation: null;
    enrollment: { id: string; token: string; maxUses: number; expiresAt: Date } | null;
  };
}

async function enroll(token: string, hostname: string) {
  const tokenId = await verifyEnrollmentToken(t.db, token);
  if (!tokenId) throw new Error("token not usable");
  return enrollMachine(t.db, { tokenId, hostname, actor: systemActor });
}

async function openEnrollments(fleetId: string) {
  const list = await api.query("fleet.list", undefined, as());
  return (list.data as { id: string; openEnrollments: number }[]).find((f) => f.id === fleetId)
    ?.openEnrollments;
}

const operationsOf = (fleetId: string) =>
  t.db.select().from(operations).where(eq(operations.fleetId, fleetId));

describe("bring-your-own fleets through the API", () => {
  it("create: an active fleet and one enrollment token for its machines, no operation", async () => {
    const created = await createByo(3);
    expect(created.operation).toBeNull();
    expect(created.enrollment).toMatchObject({ maxUses: 3 });
    expect(created.enrollment?.token).toMatch(/^lle_/);
    const [fleet] = await t.db.select().from(fleets).where(eq(fleets.id, created.fleetId));
    expect(fleet).toMatchObject({ driver: "byo", status: "active", desiredSize: 3 });
    expect(await operationsOf(created.fleetId)).toEqual([]);
    expect(await openEnrollments(created.fleetId)).toBe(3);

    // A machine enrolls with it.
    await enroll(created.enrollment?.token as string, "lab-pc-1");
    expect(await openEnrollments(created.fleetId)).toBe(2);

    // A fleet of 0 gets no token.
    const empty = await createByo(0);
    expect(empty.enrollment).toBeNull();
  });

  it("scale: a token for the shortfall; scaling down retires unused uses, newest first, and keeps enrolled machines", async () => {
    const created = await createByo(3);
    const first = created.enrollment?.token as string;
    await enroll(first, "lab-pc-1");

    const up = await api.mutate("fleet.scale", { fleetId: created.fleetId, size: 5 }, as());
    expect(up.status, JSON.stringify(up.error)).toBe(200);
    // 1 enrolled, 2 uses still open on the first token: 2 more.
    expect(up.data).toMatchObject({ operation: null, enrolled: 1, enrollment: { maxUses: 2 } });
    expect(await openEnrollments(created.fleetId)).toBe(4);

    const down = await api.mutate("fleet.scale", { fleetId: created.fleetId, size: 2 }, as());
    expect(down.data).toMatchObject({ operation: null, enrollment: null, retiredUses: 3 });
    expect(await openEnrollments(created.fleetId)).toBe(1);
    const tokens = await t.db
      .select()
      .from(enrollmentTokens)
      .where(eq(enrollmentTokens.fleetId, created.fleetId))
      .orderBy(enrollmentTokens.createdAt);
    // The newer token is used up by the cut, hence revoked; the first keeps one use.
    expect(tokens.map((x) => [x.maxUses, x.uses, x.revokedAt !== null])).toEqual([
      [2, 1, false],
      [0, 0, true],
    ]);

    const zero = await api.mutate("fleet.scale", { fleetId: created.fleetId, size: 0 }, as());
    expect(zero.data).toMatchObject({ retiredUses: 1 });
    expect(await openEnrollments(created.fleetId)).toBe(0);
    expect(await verifyEnrollmentToken(t.db, first)).toBeNull();
    // The enrolled machine stays; the admin removes machines one by one.
    const live = await t.db
      .select()
      .from(vms)
      .where(and(eq(vms.fleetId, created.fleetId), ne(vms.state, "terminated")));
    expect(live).toHaveLength(1);
    expect(await operationsOf(created.fleetId)).toEqual([]);
  });

  it("reboot of a byo machine is refused with a clear message; terminate takes it out of LabLink", async () => {
    const created = await createByo(2);
    const machine = await enroll(created.enrollment?.token as string, "lab-pc-9");

    const reboot = await api.mutate("vm.reboot", { vmId: machine.vmId }, as());
    expect(reboot.status).toBe(412);
    expect(reboot.error?.data.code).toBe("PRECONDITION_FAILED");
    expect(reboot.error?.message).toMatch(/bring-your-own machine: LabLink cannot reboot it/);

    const terminate = await api.mutate("vm.terminate", { vmId: machine.vmId }, as());
    expect(terminate.status, JSON.stringify(terminate.error)).toBe(200);
    expect(terminate.data).toMatchObject({ operation: null, state: "terminating" });
    expect(await operationsOf(created.fleetId)).toEqual([]);
    const [fleet] = await t.db.select().from(fleets).where(eq(fleets.id, created.fleetId));
    expect(fleet?.desiredSize).toBe(1);

    // Its agent's next reply tells it to stop; its token still works until then.
    const [vm] = await t.db.select().from(vms).where(eq(vms.id, machine.vmId));
    expect(await commandsFor(t.db, vm as NonNullable<typeof vm>)).toEqual([
      { type: "shutdown", reason: "VM is terminating" },
    ]);
    expect(await verifyAgentToken(t.db, machine.token)).not.toBeNull();
    // Not before the grace...
    expect(await finishByoRemovals(t.db, 3_600, systemActor)).toBe(0);
    // ...then it ends and its token is revoked.
    expect(await finishByoRemovals(t.db, 0, systemActor)).toBe(1);
    const [gone] = await t.db.select().from(vms).where(eq(vms.id, machine.vmId));
    expect(gone?.state).toBe("terminated");
    expect(await verifyAgentToken(t.db, machine.token)).toBeNull();
  });

  it("destroy: every machine is told to stop, no machine can enroll again, the fleet is gone", async () => {
    const created = await createByo(3);
    const token = created.enrollment?.token as string;
    await enroll(token, "lab-pc-a");
    await enroll(token, "lab-pc-b");

    const res = await api.mutate("fleet.destroy", { fleetId: created.fleetId }, as());
    expect(res.status, JSON.stringify(res.error)).toBe(200);
    expect(res.data).toEqual({ operation: null, machinesStopped: 2 });
    const rows = await t.db.select().from(vms).where(eq(vms.fleetId, created.fleetId));
    expect(rows.map((r) => r.state)).toEqual(["terminating", "terminating"]);
    const [fleet] = await t.db.select().from(fleets).where(eq(fleets.id, created.fleetId));
    expect(fleet).toMatchObject({ status: "destroyed", desiredSize: 0 });
    expect(await verifyEnrollmentToken(t.db, token)).toBeNull();
    expect(await operationsOf(created.fleetId)).toEqual([]);

    // Destroyed: a second destroy or a scale is a conflict, not a 500.
    const again = await api.mutate("fleet.destroy", { fleetId: created.fleetId }, as());
    expect(again.status).toBe(409);
    const scale = await api.mutate("fleet.scale", { fleetId: created.fleetId, size: 1 }, as());
    expect(scale.status).toBe(409);
  });

  it("enrollment expiry is for byo fleets only", async () => {
    const local = await makeFleet(t.db, { driver: "local" });
    const res = await api.mutate(
      "fleet.scale",
      { fleetId: local.id, size: 1, enrollmentExpiresInS: 86_400 },
      as(),
    );
    expect(res.status).toBe(400);
    expect(res.error?.message).toMatch(/bring-your-own/);
  });
});
