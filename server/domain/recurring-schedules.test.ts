import { describe, expect, it } from "vitest";
import {
  currentBoundary,
  nextBoundary,
  occurrencesBetween,
  type RecurringRule,
  recurringScheduleInput,
  wallToInstant,
} from "./recurring-schedules";

const workshop: RecurringRule = {
  rrule: "FREQ=WEEKLY;BYDAY=TU,TH",
  timezone: "Europe/London",
  startTime: "09:00",
  endTime: "17:00",
  startDate: "2026-03-01",
  size: 8,
  fallbackSize: 0,
};
const iso = (d: Date) => d.toISOString();

describe("recurring schedules", () => {
  it("keep 09:00–17:00 London wall time across the spring DST change (29 March 2026)", () => {
    const occ = occurrencesBetween(
      workshop,
      new Date("2026-03-24T00:00:00Z"),
      new Date("2026-04-03T00:00:00Z"),
    );
    expect(occ.map((o) => [iso(o.start), iso(o.end)])).toEqual([
      ["2026-03-24T09:00:00.000Z", "2026-03-24T17:00:00.000Z"], // GMT
      ["2026-03-26T09:00:00.000Z", "2026-03-26T17:00:00.000Z"],
      ["2026-03-31T08:00:00.000Z", "2026-03-31T16:00:00.000Z"], // BST = UTC+1
      ["2026-04-02T08:00:00.000Z", "2026-04-02T16:00:00.000Z"],
    ]);
  });

  it("and across the autumn change (25 October 2026), in New York too", () => {
    const london = occurrencesBetween(
      workshop,
      new Date("2026-10-20T00:00:00Z"),
      new Date("2026-10-28T00:00:00Z"),
    );
    expect(london.map((o) => iso(o.start))).toEqual([
      "2026-10-20T08:00:00.000Z",
      "2026-10-22T08:00:00.000Z",
      "2026-10-27T09:00:00.000Z",
    ]);
    const ny = occurrencesBetween(
      { ...workshop, timezone: "America/New_York", rrule: "FREQ=DAILY" },
      new Date("2026-03-07T00:00:00Z"),
      new Date("2026-03-09T23:00:00Z"),
    );
    // DST starts 8 March 2026 in the US: 09:00 EST = 14:00Z, 09:00 EDT = 13:00Z.
    expect(ny.map((o) => iso(o.start))).toEqual([
      "2026-03-07T14:00:00.000Z",
      "2026-03-08T13:00:00.000Z",
      "2026-03-09T13:00:00.000Z",
    ]);
  });

  it("a wall time in the spring-forward gap lands after it", () => {
    expect(iso(wallToInstant(new Date("2026-03-29T01:30:00Z"), "Europe/London"))).toBe(
      "2026-03-29T01:30:00.000Z",
    );
    expect(iso(wallToInstant(new Date("2026-03-28T01:30:00Z"), "Europe/London"))).toBe(
      "2026-03-28T01:30:00.000Z",
    );
  });

  it("gives the size in force and the next change", () => {
    const tueMorning = new Date("2026-03-31T10:00:00Z"); // 11:00 BST, in the slot
    expect(currentBoundary(workshop, tueMorning)).toEqual({
      at: new Date("2026-03-31T08:00:00Z"),
      size: 8,
    });
    expect(nextBoundary(workshop, tueMorning)).toEqual({
      at: new Date("2026-03-31T16:00:00Z"),
      size: 0,
    });
    const wedNoon = new Date("2026-04-01T12:00:00Z");
    expect(currentBoundary(workshop, wedNoon)).toEqual({
      at: new Date("2026-03-31T16:00:00Z"),
      size: 0,
    });
    expect(nextBoundary(workshop, wedNoon)).toEqual({
      at: new Date("2026-04-02T08:00:00Z"),
      size: 8,
    });
    expect(currentBoundary(workshop, new Date("2026-02-01T00:00:00Z"))).toBeNull();
    expect(nextBoundary({ ...workshop, rrule: "FREQ=WEEKLY;COUNT=1" }, wedNoon)).toBeNull();
  });

  it("validates the rule and names the field", () => {
    const ok = {
      fleetId: "00000000-0000-4000-8000-000000000000",
      rrule: "FREQ=WEEKLY;BYDAY=TU,TH",
      timezone: "Europe/London",
      startTime: "09:00",
      endTime: "17:00",
      size: 8,
    };
    expect(recurringScheduleInput.safeParse(ok).success).toBe(true);
    const issue = (over: Record<string, unknown>) => {
      const r = recurringScheduleInput.safeParse({ ...ok, ...over });
      return r.success
        ? null
        : { path: r.error.issues[0]?.path.join("."), message: r.error.issues[0]?.message };
    };
    expect(issue({ rrule: "FREQ=MINUTELY" })).toMatchObject({
      path: "rrule",
      message: expect.stringMatching(/too often/),
    });
    expect(issue({ rrule: "FREQ=SECONDLY;COUNT=5" })?.path).toBe("rrule");
    expect(issue({ rrule: "FREQ=HOURLY" })?.path).toBe("rrule");
    expect(issue({ rrule: "BYDAY=TU" })).toMatchObject({
      path: "rrule",
      message: expect.stringMatching(/FREQ/),
    });
    expect(issue({ rrule: "FREQ=WEEKLY;BYDAY=XX" })?.path).toBe("rrule");
    expect(issue({ rrule: "FREQ=WEEKLY;FOO=1" })?.path).toBe("rrule");
    expect(issue({ rrule: "DTSTART:20260101T000000Z\nRRULE:FREQ=DAILY" })?.path).toBe("rrule");
    expect(issue({ rrule: "FREQ=DAILY;BYHOUR=9,10" })?.path).toBe("rrule");
    expect(issue({ timezone: "Mars/Olympus" })?.path).toBe("timezone");
    expect(issue({ startTime: "9am" })?.path).toBe("startTime");
    expect(issue({ endTime: "09:00" })?.path).toBe("endTime");
  });
});
