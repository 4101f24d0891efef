import { and, eq } from "drizzle-orm";
import nodemailer from "nodemailer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, claimRefusals, type Fleet, fleets, vms } from "../../server/db/schema";
import { claimVm, myVm } from "../../server/domain/allocation";
import { extendHold, WAITING_WINDOW_MINUTES } from "../../server/domain/hold-extensions";
import { releaseExpiredHolds } from "../../server/domain/hold-limits";
import { sendHoldReminders } from "../../server/domain/hold-reminders";
import type { Actor } from "../../server/domain/vm-state";
import type { Mailer } from "../../server/mail";
import { apiClient } from "../api/harness";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";

let t: TestDatabase;
let api: ReturnType<typeof apiClient>;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
});
afterAll(() => t?.drop());

const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000);
const actorOf = (id: string): Actor => ({ kind: "user", id });

/** A fleet with a 60-minute hold limit and these extension rules, and a VM held for `heldMin`. */
async function held(
  rules: Partial<typeof fleets.$inferInsert> = {},
  heldMin = 10,
): Promise<{ fleet: Fleet; holderId: string; vmId: string; claimedAt: Date }> {
  const fleet = await makeFleet(t.db, {
    maxHoldMinutes: 60,
    holdExtendMinutes: 30,
    maxHoldExtensions: 2,
    maxTotalHoldMinutes: null,
    ...rules,
  });
  const holder = await makeUser(t.db);
  const claimedAt = minutesAgo(heldMin);
  const [vm] = await makeVms(t.db, fleet, 1, "claimed", {
    holderId: holder.id,
    claimedAt,
    assignmentId: crypto.randomUUID(),
  });
  if (!vm) throw new Error("fixtures");
  return { fleet, holderId: holder.id, vmId: vm.id, claimedAt };
}

async function extend(userId: string) {
  return api.mutate("vm.extend", undefined, { userId });
}

describe("vm.extend", () => {
  it("adds the fleet's step to the researcher's own hold, audited; My VM shows the new end and extensions left", async () => {
    const h = await held();
    const res = await extend(h.holderId);
    expect(res.status).toBe(200);
    const data = res.data as {
      holdExpiresAt: Date;
      extensionsLeft: number;
      extensionsUsed: number;
    };
    expect(data).toMatchObject({
      vmId: h.vmId,
      extensionsUsed: 1,
      extensionsLeft: 1,
      addedMinutes: 30,
    });
    expect(data.holdExpiresAt.getTime()).toBe(h.claimedAt.getTime() + 90 * 60_000);

    const mine = await myVm(t.db, h.holderId);
    expect(mine?.holdExpiresAt?.getTime()).toBe(h.claimedAt.getTime() + 90 * 60_000);
    expect(mine?.extension).toEqual({ stepMinutes: 30, left: 1, used: 1, maxTotalMinutes: null });

    const [entry] = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.action, "hold.extended"), eq(auditEvents.targetId, h.vmId)));
    expect(entry).toMatchObject({
      actorKind: "user",
      actorId: h.holderId,
      details: { holderId: h.holderId, addedMinutes: 30, extension: 1, extendedMinutes: 30 },
    });
  });

  it("keeps an extended hold past the fleet's limit: the sweep reads the new end", async () => {
    const h = await held({}, 70);
    // Past the 60-minute limit already: nothing to extend, the sweep would release it.
    const late = await extend(h.holderId);
    expect(late.status).toBe(412);
    expect(late.error?.data).toMatchObject({
      code: "PRECONDITION_FAILED",
      details: { reason: "ended" },
    });

    const fresh = await held({}, 50);
    expect((await extend(fresh.holderId)).status).toBe(200);
    await t.db
      .update(vms)
      .set({ claimedAt: minutesAgo(70) })
      .where(eq(vms.id, fresh.vmId));
    const released = (await releaseExpiredHolds(t.db)).map((r) => r.vmId);
    expect(released).toContain(h.vmId);
    expect(released).not.toContain(fresh.vmId);
  });

  it("refuses when the fleet has no hold limit or no extension rules", async () => {
    const unlimited = await held({ maxHoldMinutes: null });
    const a = await extend(unlimited.holderId);
    expect(a.status).toBe(412);
    expect(a.error?.data).toMatchObject({ details: { reason: "no_hold_limit" } });
    expect(a.error?.message).toMatch(/no hold limit/);

    const fixed = await held({ holdExtendMinutes: null, maxHoldExtensions: 0 });
    const b = await extend(fixed.holderId);
    expect(b.status).toBe(412);
    expect(b.error?.data).toMatchObject({ details: { reason: "not_extendable" } });
    expect(await myVm(t.db, fixed.holderId)).toMatchObject({ extension: null });
  });

  it("refuses past the maximum number of extensions, and past the maximum total", async () => {
    const h = await held({ maxHoldExtensions: 1 });
    expect((await extend(h.holderId)).status).toBe(200);
    const again = await extend(h.holderId);
    expect(again.status).toBe(412);
    expect(again.error?.data).toMatchObject({ details: { reason: "max_extensions" } });
    expect(again.error?.message).toMatch(/used all 1 extension /);

    // 60 + 30 = 90 fits in 100; a second 30 would make 120.
    const total = await held({ maxHoldExtensions: 5, maxTotalHoldMinutes: 100 });
    expect(await myVm(t.db, total.holderId)).toMatchObject({ extension: { left: 1 } });
    expect((await extend(total.holderId)).status).toBe(200);
    const over = await extend(total.holderId);
    expect(over.status).toBe(412);
    expect(over.error?.data).toMatchObject({
      details: { reason: "max_total", maxTotalMinutes: 100 },
    });
    const [row] = await t.db.select().from(vms).where(eq(vms.id, total.vmId));
    expect(row).toMatchObject({ holdExtensions: 1, holdExtendedMinutes: 30 });
  });

  it("refuses while someone else's claim for that fleet was refused for lack of a VM, until they hold one", async () => {
    const h = await held();
    const other = await held(); // another fleet: nobody waits for it
    const waiter = await makeUser(t.db);
    // The fleet's only VM is held: the waiter's claim is refused, and recorded.
    await expect(
      claimVm(t.db, { userId: waiter.id, fleetId: h.fleet.id, actor: actorOf(waiter.id) }),
    ).rejects.toMatchObject({ code: "NO_CAPACITY" });

    const res = await extend(h.holderId);
    expect(res.status).toBe(412);
    expect(res.error?.data).toMatchObject({
      details: { reason: "someone_waiting", windowMinutes: WAITING_WINDOW_MINUTES },
    });
    expect(res.error?.message).toMatch(/Someone is waiting/);
    expect((await extend(other.holderId)).status).toBe(200);

    // The waiter gets a VM: nobody waits any more.
    await makeVms(t.db, h.fleet, 1, "ready");
    await claimVm(t.db, { userId: waiter.id, fleetId: h.fleet.id, actor: actorOf(waiter.id) });
    expect((await extend(h.holderId)).status).toBe(200);
  });

  it("counts a refused claim for any fleet of that instance type, but not an old one", async () => {
    const h = await held({ instanceType: "p4d.24xlarge" });
    const waiter = await makeUser(t.db);
    await expect(
      claimVm(t.db, {
        userId: waiter.id,
        instanceType: "p4d.24xlarge",
        actor: actorOf(waiter.id),
      }),
    ).rejects.toMatchObject({ code: "NO_CAPACITY" });
    expect((await extend(h.holderId)).status).toBe(412);
    // The refusal ages past the window: the waiter has given up.
    await t.db
      .update(claimRefusals)
      .set({ at: minutesAgo(WAITING_WINDOW_MINUTES + 1) })
      .where(eq(claimRefusals.userId, waiter.id));
    expect((await extend(h.holderId)).status).toBe(200);
  });

  it("refuses with FORBIDDEN when the extended hold would exceed the weekly GPU-hour quota", async () => {
    // 50 min left + 60 more = 1.8 GPU-hours > 1.
    const h = await held({ gpuHoursPerWeek: 1, holdExtendMinutes: 60 });
    const res = await extend(h.holderId);
    expect(res.status).toBe(403);
    expect(res.error?.data).toMatchObject({ code: "FORBIDDEN", details: { reason: "quota" } });
    expect(res.error?.message).toMatch(/1 GPU-hours/);
    const roomy = await held({ gpuHoursPerWeek: 10 });
    expect((await extend(roomy.holderId)).status).toBe(200);
  });

  it("refuses a draining VM, and a researcher without a VM gets NOT_FOUND", async () => {
    const h = await held();
    await t.db.update(vms).set({ state: "draining" }).where(eq(vms.id, h.vmId));
    const res = await extend(h.holderId);
    expect(res.status).toBe(412);
    expect(res.error?.data).toMatchObject({ details: { reason: "not_claimed" } });
    const nobody = await makeUser(t.db);
    expect((await extend(nobody.id)).status).toBe(404);
  });

  it("two (and ten) extends at once never pass the maximum: one guarded UPDATE", async () => {
    const h = await held({ maxHoldExtensions: 2 });
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, () =>
        extendHold(t.db, { userId: h.holderId, actor: actorOf(h.holderId) }),
      ),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(2);
    const [row] = await t.db.select().from(vms).where(eq(vms.id, h.vmId));
    expect(row).toMatchObject({ holdExtensions: 2, holdExtendedMinutes: 60 });
    const entries = await t.db
      .select()
      .from(auditEvents)
      .where(and(eq(auditEvents.action, "hold.extended"), eq(auditEvents.targetId, h.vmId)));
    expect(entries).toHaveLength(2);

    // The total, too: 60 + 30 fits in 95 once.
    const total = await held({ maxHoldExtensions: 10, maxTotalHoldMinutes: 95 });
    const both = await Promise.allSettled([
      extendHold(t.db, { userId: total.holderId, actor: actorOf(total.holderId) }),
      extendHold(t.db, { userId: total.holderId, actor: actorOf(total.holderId) }),
    ]);
    expect(both.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const [r2] = await t.db.select().from(vms).where(eq(vms.id, total.vmId));
    expect(r2?.holdExtendedMinutes).toBe(30);
  });

  it("starts each claim with no extensions", async () => {
    const fleet = await makeFleet(t.db, {
      maxHoldMinutes: 60,
      holdExtendMinutes: 30,
      maxHoldExtensions: 1,
    });
    await makeVms(t.db, fleet, 1, "ready", { holdExtensions: 1, holdExtendedMinutes: 30 });
    const user = await makeUser(t.db);
    const { vm } = await claimVm(t.db, {
      userId: user.id,
      fleetId: fleet.id,
      actor: actorOf(user.id),
    });
    expect(vm).toMatchObject({ holdExtensions: 0, holdExtendedMinutes: 0 });
    expect((await extend(user.id)).status).toBe(200);
  });

  it("reminds the holder again before the new end of an extended hold", async () => {
    const mails: string[] = [];
    const transport = nodemailer.createTransport({ jsonTransport: true });
    const mailer: Mailer = {
      async sendMail(message) {
        mails.push(String(message.subject));
        return transport.sendMail(message);
      },
    };
    const settings = {
      mailer,
      from: "lablink@example.edu",
      publicUrl: "https://lablink.example.edu/",
      leadMinutes: 15,
    };
    // 60-minute limit, held 50: the reminder for the end in 10 minutes goes out once.
    const h = await held({}, 50);
    const sentBefore = await sendHoldReminders(t.db, settings);
    expect(sentBefore.filter((s) => s.vmId === h.vmId)).toHaveLength(1);
    expect((await sendHoldReminders(t.db, settings)).filter((s) => s.vmId === h.vmId)).toHaveLength(
      0,
    );

    // Extended by 30: the new end is 40 minutes away, and 30 minutes on it is reminded again.
    expect((await extend(h.holderId)).status).toBe(200);
    expect((await sendHoldReminders(t.db, settings)).filter((s) => s.vmId === h.vmId)).toHaveLength(
      0,
    );
    const later = new Date(Date.now() + 30 * 60_000);
    const again = (await sendHoldReminders(t.db, settings, undefined, later)).filter(
      (s) => s.vmId === h.vmId,
    );
    expect(again).toHaveLength(1);
    expect(again[0]?.releaseAt.getTime()).toBe(h.claimedAt.getTime() + 90 * 60_000);
  });
});

describe("fleet.setHoldExtension", () => {
  it("sets and clears a fleet's rules, audited from→to; an impossible total is a BAD_REQUEST", async () => {
    const admin = await makeUser(t.db, "admin");
    const fleet = await makeFleet(t.db, { maxHoldMinutes: 120 });
    const rules = { stepMinutes: 60, maxExtensions: 3, maxTotalMinutes: 300 };
    const res = await api.mutate(
      "fleet.setHoldExtension",
      { fleetId: fleet.id, rules },
      { userId: admin.id },
    );
    expect(res.status).toBe(200);
    const [row] = await t.db.select().from(fleets).where(eq(fleets.id, fleet.id));
    expect(row).toMatchObject({
      holdExtendMinutes: 60,
      maxHoldExtensions: 3,
      maxTotalHoldMinutes: 300,
    });

    const bad = await api.mutate(
      "fleet.setHoldExtension",
      { fleetId: fleet.id, rules: { ...rules, maxTotalMinutes: 150 } },
      { userId: admin.id },
    );
    expect(bad.status).toBe(400);
    expect(bad.error?.message).toMatch(/at least 180 minutes/);

    const off = await api.mutate(
      "fleet.setHoldExtension",
      { fleetId: fleet.id, rules: null },
      { userId: admin.id },
    );
    expect(off.status).toBe(200);
    const entries = await t.db
      .select()
      .from(auditEvents)
      .where(
        and(eq(auditEvents.action, "fleet.hold_extension"), eq(auditEvents.targetId, fleet.id)),
      )
      .orderBy(auditEvents.at);
    expect(entries.map((e) => e.details)).toEqual([
      { from: null, to: rules },
      { from: rules, to: null },
    ]);
  });
});
