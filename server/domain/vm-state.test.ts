import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../tests/db";
import { makeFleet, makeUser, makeVms } from "../../tests/fixtures";
import { auditEvents, type Fleet, type VmState, vms } from "../db/schema";
import { DomainError } from "./errors";
import {
  canHaveHolder,
  canTransition,
  systemActor,
  TRANSITIONS,
  transition,
  VM_STATES,
} from "./vm-state";

let t: TestDatabase;
let fleet: Fleet;
let holderId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  fleet = await makeFleet(t.db);
});
afterAll(() => t.drop());

async function vmIn(state: VmState) {
  // A fresh holder per VM: the schema allows one held VM per researcher.
  holderId = (await makeUser(t.db)).id;
  const [vm] = await makeVms(t.db, fleet, 1, state, {
    holderId: state === "claimed" ? holderId : null,
    assignmentId: state === "claimed" ? crypto.randomUUID() : null,
  });
  if (!vm) throw new Error("no vm");
  return vm;
}

const auditFor = (vmId: string) =>
  t.db.select().from(auditEvents).where(eq(auditEvents.targetId, vmId));

const legal = VM_STATES.flatMap((from) =>
  (TRANSITIONS[from] as readonly VmState[]).map((to) => [from, to] as const),
);
const illegal = VM_STATES.flatMap((from) =>
  VM_STATES.filter((to) => !canTransition(from, to)).map((to) => [from, to] as const),
);

describe("VM state machine", () => {
  it("has a sensible table", () => {
    expect(TRANSITIONS.terminated).toEqual([]);
    for (const s of VM_STATES)
      if (s !== "terminated" && s !== "failed") expect(canTransition(s, "failed")).toBe(true);
    expect(canTransition("ready", "claimed")).toBe(true);
    expect(canTransition("claimed", "ready")).toBe(false);
    expect(legal.length).toBeGreaterThan(25);
  });

  it("says a used machine reaches ready only through a wipe (releasing), never via booting", () => {
    // Without `releasing`, and without `claimed` (a holder's own VM coming back to them), no
    // path leads from `failed` or `rebooting` to `ready`; `booting` is for new machines only.
    const reachable = (from: VmState, skip: readonly VmState[]) => {
      const seen = new Set<VmState>([from]);
      const todo = [from];
      for (let s = todo.pop(); s; s = todo.pop()) {
        for (const next of TRANSITIONS[s] as readonly VmState[]) {
          if (skip.includes(next) || seen.has(next)) continue;
          seen.add(next);
          todo.push(next);
        }
      }
      return seen;
    };
    for (const from of ["failed", "rebooting"] as const) {
      expect(reachable(from, ["releasing", "claimed"]).has("ready")).toBe(false);
      expect(reachable(from, []).has("booting")).toBe(false);
    }
    expect(canTransition("rebooting", "releasing")).toBe(true);
    expect(canTransition("rebooting", "booting")).toBe(false);
    expect(canTransition("failed", "ready")).toBe(false);
  });

  it.each(legal)("%s → %s works and writes its audit row", async (from, to) => {
    const vm = await vmIn(from);
    const patch = to === "claimed" ? { holderId, assignmentId: crypto.randomUUID() } : {};
    const updated = await transition(t.db, {
      vmId: vm.id,
      from,
      to,
      actor: systemActor,
      action: "test",
      patch,
    });
    expect(updated.state).toBe(to);
    if (!canHaveHolder(to)) expect(updated.holderId).toBeNull();
    const audit = await auditFor(vm.id);
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({
      fromState: from,
      toState: to,
      action: "test",
      actorKind: "system",
    });
  });

  it.each(illegal)("%s → %s is refused and changes nothing", async (from, to) => {
    const vm = await vmIn(from);
    const attempt = transition(t.db, { vmId: vm.id, from, to, actor: systemActor, action: "test" });
    await expect(attempt).rejects.toMatchObject({ code: "ILLEGAL_TRANSITION" });
    const [after] = await t.db.select().from(vms).where(eq(vms.id, vm.id));
    expect(after).toEqual(vm);
    expect(await auditFor(vm.id)).toHaveLength(0);
  });

  it("refuses an illegal move from the VM's actual state when no source state is given", async () => {
    const vm = await vmIn("terminated");
    await expect(
      transition(t.db, { vmId: vm.id, to: "ready", actor: systemActor, action: "test" }),
    ).rejects.toMatchObject({ code: "ILLEGAL_TRANSITION" });
  });

  it("a lost race (state changed meanwhile) is a conflict and writes nothing", async () => {
    const vm = await vmIn("ready");
    await transition(t.db, {
      vmId: vm.id,
      from: "ready",
      to: "draining",
      actor: systemActor,
      action: "a",
    });
    const err = await transition(t.db, {
      vmId: vm.id,
      from: "ready",
      to: "rebooting",
      actor: systemActor,
      action: "b",
    }).catch((e) => e);
    expect(err).toBeInstanceOf(DomainError);
    expect(err.code).toBe("STATE_CONFLICT");
    const [after] = await t.db.select().from(vms).where(eq(vms.id, vm.id));
    expect(after?.state).toBe("draining");
    expect(await auditFor(vm.id)).toHaveLength(1);
  });

  it("two concurrent transitions from the same state: exactly one wins", async () => {
    const vm = await vmIn("ready");
    const results = await Promise.allSettled(
      (["draining", "rebooting", "terminating", "failed"] as const).map((to) =>
        transition(t.db, { vmId: vm.id, from: "ready", to, actor: systemActor, action: to }),
      ),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect(await auditFor(vm.id)).toHaveLength(1);
  });

  it("an unknown VM is NOT_FOUND", async () => {
    await expect(
      transition(t.db, {
        vmId: crypto.randomUUID(),
        from: "ready",
        to: "draining",
        actor: systemActor,
        action: "x",
      }),
    ).rejects.toMatchObject({ code: "NOT_FOUND" });
  });
});
