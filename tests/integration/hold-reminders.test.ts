import { eq } from "drizzle-orm";
import nodemailer from "nodemailer";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { holdReminders, users, vms } from "../../server/db/schema";
import {
  type ReminderSettings,
  reminderSettings,
  sendHoldReminders,
} from "../../server/domain/hold-reminders";
import { parseEnv } from "../../server/env";
import { allJobs } from "../../server/jobs/definitions";
import { JobRunner } from "../../server/jobs/runner";
import { logger } from "../../server/log";
import type { Mailer } from "../../server/mail";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet, makeUser, makeVms } from "../fixtures";
import { runJob } from "../jobs";

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(() => t?.drop());

type Mail = { to: string; subject: string; text: string; from: string };
let mails: Mail[] = [];
const transport = nodemailer.createTransport({ jsonTransport: true });
const capture: Mailer = {
  async sendMail(message) {
    const info = (await transport.sendMail(message)) as { message: string };
    const m = JSON.parse(info.message) as {
      to: { address: string }[];
      from: { address: string };
      subject: string;
      text: string;
    };
    mails.push({
      to: m.to[0]?.address ?? "",
      from: m.from.address,
      subject: m.subject,
      text: m.text,
    });
    return info;
  },
};
beforeEach(() => {
  mails = [];
});

const settings = (mailer: Mailer = capture): ReminderSettings => ({
  mailer,
  from: "lablink@example.edu",
  publicUrl: "https://lablink.example.edu/",
  leadMinutes: 15,
});
const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000);

/** A VM held since `claimedMinutesAgo` in a fleet with these limits, optionally idle. */
async function held(
  limits: { maxHoldMinutes?: number; idleReleaseMinutes?: number },
  claimedMinutesAgo: number,
  idleMinutesAgo: number | null = null,
) {
  const fleet = await makeFleet(t.db, limits);
  const holder = await makeUser(t.db, "researcher", `Ada-${crypto.randomUUID().slice(0, 6)}`);
  const [vm] = await makeVms(t.db, fleet, 1, "claimed", {
    holderId: holder.id,
    claimedAt: minutesAgo(claimedMinutesAgo),
    assignmentId: crypto.randomUUID(),
    idleSince: idleMinutesAgo === null ? null : minutesAgo(idleMinutesAgo),
    lastHeartbeatAt: new Date(),
  });
  if (!vm) throw new Error("fixtures");
  return { vm, holder, fleet };
}

const mailsTo = (email: string | null) => mails.filter((m) => m.to === email);

describe("hold reminders", () => {
  it("emails the holder once when the hold limit is under 15 minutes away, with when, why and My VM", async () => {
    const soon = await held({ maxHoldMinutes: 60 }, 50);
    const later = await held({ maxHoldMinutes: 60 }, 30);
    const past = await held({ maxHoldMinutes: 60 }, 61);

    const sent = await sendHoldReminders(t.db, settings());
    expect(sent.map((s) => s.vmId)).toContain(soon.vm.id);
    expect(sent.map((s) => s.vmId)).not.toContain(later.vm.id);
    // Already due: the release itself deals with it, no "will be released" mail after the fact.
    expect(sent.map((s) => s.vmId)).not.toContain(past.vm.id);

    const [mail] = mailsTo(soon.holder.email);
    expect(mailsTo(soon.holder.email)).toHaveLength(1);
    expect(mail?.from).toBe("lablink@example.edu");
    expect(mail?.subject).toMatch(
      new RegExp(`^Your LabLink VM ${soon.vm.name} will be released at \\d\\d:\\d\\d UTC$`),
    );
    expect(mail?.text).toContain(`Hello ${soon.holder.name}`);
    expect(mail?.text).toMatch(
      /in about (9|10) min: the fleet \S+ lets a researcher hold a VM for 1 h\./,
    );
    expect(mail?.text).toContain("A released VM is wiped.");
    expect(mail?.text).toContain("My VM: https://lablink.example.edu/");
    expect(mail?.text).toContain(
      "Take your work along (download your home folder as a .tar.gz from My VM): https://lablink.example.edu/#download-work",
    );
    expect(mailsTo(later.holder.email)).toHaveLength(0);
    expect(mailsTo(past.holder.email)).toHaveLength(0);

    // A second run (the sweep runs every 30 s) sends nothing new.
    expect((await sendHoldReminders(t.db, settings())).map((s) => s.vmId)).not.toContain(
      soon.vm.id,
    );
    expect(mailsTo(soon.holder.email)).toHaveLength(1);
  });

  it("emails an idle VM's holder, and again after they came back and went idle again", async () => {
    const idle = await held({ idleReleaseMinutes: 30 }, 120, 20);
    const busy = await held({ idleReleaseMinutes: 30 }, 120, null);
    await sendHoldReminders(t.db, settings());
    const [mail] = mailsTo(idle.holder.email);
    expect(mailsTo(idle.holder.email)).toHaveLength(1);
    expect(mail?.text).toMatch(
      /nothing has used it since \d\d:\d\d UTC, and the fleet \S+ releases VMs idle for 30 min\./,
    );
    expect(mail?.text).toContain("Connecting to it, or running something on it, keeps it yours.");
    expect(mailsTo(busy.holder.email)).toHaveLength(0);

    // Back at work, then idle again from a later moment: a new period, a new reminder.
    await t.db
      .update(vms)
      .set({ idleSince: minutesAgo(18) })
      .where(eq(vms.id, idle.vm.id));
    await sendHoldReminders(t.db, settings());
    expect(mailsTo(idle.holder.email)).toHaveLength(2);
    expect(
      await t.db.select().from(holdReminders).where(eq(holdReminders.vmId, idle.vm.id)),
    ).toHaveLength(2);
  });

  it("reminds again after the holder said they are still using it", async () => {
    const idle = await held({ idleReleaseMinutes: 30 }, 120, 20);
    await sendHoldReminders(t.db, settings());
    expect(mailsTo(idle.holder.email)).toHaveLength(1);
    // "I'm still using it" 20 minutes ago, and idle since: a new period, due in 10 minutes.
    await t.db
      .update(vms)
      .set({ idleKeptAt: minutesAgo(20) })
      .where(eq(vms.id, idle.vm.id));
    await sendHoldReminders(t.db, settings());
    expect(mailsTo(idle.holder.email)).toHaveLength(2);
    // The mail still says since when nothing has used the VM: the start of idleness.
    const idleSince = idle.vm.idleSince?.toISOString().slice(11, 16);
    expect(mailsTo(idle.holder.email)[1]?.text).toContain(
      `nothing has used it since ${idleSince} UTC`,
    );
  });

  it("does not trust a quiet agent's idle report, and skips holders without an email", async () => {
    const quiet = await held({ idleReleaseMinutes: 30 }, 120, 20);
    await t.db
      .update(vms)
      .set({ lastHeartbeatAt: minutesAgo(5) })
      .where(eq(vms.id, quiet.vm.id));
    const noEmail = await held({ maxHoldMinutes: 60 }, 50);
    await t.db.update(users).set({ email: null }).where(eq(users.id, noEmail.holder.id));
    const sent = (await sendHoldReminders(t.db, settings())).map((s) => s.vmId);
    expect(sent).not.toContain(quiet.vm.id);
    expect(sent).not.toContain(noEmail.vm.id);
    expect(mailsTo(quiet.holder.email)).toHaveLength(0);
  });

  it("a mail that fails is not recorded, and goes out on the next run", async () => {
    const h = await held({ maxHoldMinutes: 60 }, 50);
    const failing: Mailer = {
      sendMail: () => Promise.reject(new Error("connect ECONNREFUSED 127.0.0.1:25")),
    };
    const warnings: string[] = [];
    const log = {
      warn: (obj: object, msg: string) => warnings.push(`${msg} ${JSON.stringify(obj)}`),
    };
    const sent = await sendHoldReminders(t.db, settings(failing), log);
    expect(sent.map((s) => s.vmId)).not.toContain(h.vm.id);
    expect(
      await t.db.select().from(holdReminders).where(eq(holdReminders.vmId, h.vm.id)),
    ).toHaveLength(0);
    expect(warnings.some((w) => w.includes("hold reminder not sent") && w.includes(h.vm.id))).toBe(
      true,
    );
    // The warning names the VM, never the researcher's address.
    expect(warnings.join("\n")).not.toContain(h.holder.email as string);

    await sendHoldReminders(t.db, settings(), log);
    expect(mailsTo(h.holder.email)).toHaveLength(1);
  });

  it("sends nothing with a lead of 0 (reminders off)", async () => {
    const h = await held({ maxHoldMinutes: 60 }, 50);
    expect(await sendHoldReminders(t.db, { ...settings(), leadMinutes: 0 })).toEqual([]);
    expect(mailsTo(h.holder.email)).toHaveLength(0);
  });
});

describe("the vm.expire-holds job", () => {
  it("sends the reminders when the worker has a mailer", async () => {
    const runner = new JobRunner(t.url, t.db, logger);
    await runner.start(allJobs({ staleSeconds: 60, drivers: {}, reminders: settings() }));
    try {
      const h = await held({ maxHoldMinutes: 60 }, 50);
      const job = await runJob(runner, "vm.expire-holds");
      expect(job.state).toBe("completed");
      // Other tests' VMs share the database: at least this one was reminded, by mail below.
      expect((job.output as { reminded: number }).reminded).toBeGreaterThanOrEqual(1);
      expect(mailsTo(h.holder.email)).toHaveLength(1);
    } finally {
      await runner.stop();
    }
  });
});

describe("reminderSettings (the worker's configuration)", () => {
  const smtp = {
    LABLINK_SMTP_URL: "smtp://127.0.0.1:2525",
    LABLINK_EMAIL_FROM: "lablink@example.edu",
    LABLINK_PUBLIC_URL: "https://lablink.example.edu",
  };

  it("reminds 15 minutes ahead by default once SMTP is set up, linking to the public URL", () => {
    const s = reminderSettings(parseEnv(smtp));
    expect(s).toMatchObject({
      from: "lablink@example.edu",
      publicUrl: "https://lablink.example.edu",
      leadMinutes: 15,
    });
    expect(typeof s?.mailer.sendMail).toBe("function");
  });

  it("is off without SMTP, or with LABLINK_HOLD_REMINDER_MINUTES=0", () => {
    expect(reminderSettings(parseEnv({}))).toBeUndefined();
    expect(
      reminderSettings(parseEnv({ ...smtp, LABLINK_HOLD_REMINDER_MINUTES: "0" })),
    ).toBeUndefined();
    expect(
      reminderSettings(parseEnv({ ...smtp, LABLINK_HOLD_REMINDER_MINUTES: "45" }))?.leadMinutes,
    ).toBe(45);
  });
});
