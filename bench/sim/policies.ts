import { percentile } from "../lib";
import type { Policy, SimResult } from "./engine";
import type { Trace } from "./trace";

/**
 * What LabLink does today: one VM per person who comes, all up for the whole workshop, no limits.
 * Sized for the peak: with nobody's VM ever taken back, everyone who shows up may hold one at
 * once (sizing it for the 30 booked instead would only make the comparison kinder to LabLink).
 */
export function staticPolicy(trace: Trace): Policy {
  const comers = trace.participants.filter((p) => !p.noShow && p.visits.length > 0).length;
  return {
    name: "static",
    initialSize: comers,
    schedule: [],
    maxHoldMinutes: null,
    idleReleaseMinutes: null,
    reminderLeadMinutes: 0,
    agentIdleAfterMinutes: 30,
  };
}

/**
 * The settings an organiser would give LabLink for this workshop; these are what to tune, not the
 * measurement.
 * - A warm pool (ready VMs kept beyond the held ones, up to `maxSize`), whose ready count a
 *   recurring schedule sets from the published timetable (Mondays and Tuesdays, UTC): `burst`
 *   ready VMs from 25 min before each session start until 15 min after it (a VM takes up to
 *   8 min to boot, and most people sit down within 15 min before and 5 min after the start),
 *   then `trickle` for late arrivals and people coming back, and 0 from 10 min after the end.
 *   Claims raise the target (held + ready), so the pool refills while the burst lasts.
 * - Idle release after 30 min of reported idleness, with a reminder 10 min before; the agent
 *   reports idleness after 10 min (so a coffee break never costs anyone their VM, a walk-away
 *   at lunch or in the evening does, after a warning).
 * - A 5-hour hold limit (longer than any session) as the backstop for a VM kept busy overnight.
 * - Auto-recovery with the fleet's default policy; `injectedFailures` agents die mid-session.
 */
export const LABLINK_SETTINGS = {
  burst: 12,
  trickle: 3,
  maxSize: 32,
  leadMinutes: 25,
  burstMinutes: 15,
  tailMinutes: 10,
  maxHoldMinutes: 300,
  idleReleaseMinutes: 30,
  reminderLeadMinutes: 10,
  agentIdleAfterMinutes: 10,
  injectedFailures: 3,
};

const hhmm = (m: number) =>
  `${String(Math.floor(m / 60) % 24).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}`;

export function lablinkPolicy(trace: Trace, s = LABLINK_SETTINGS): Policy {
  // The timetable repeats daily: day 1's sessions make the weekly slots.
  const day1 = trace.slots.filter((slot) => slot.start < 24 * 60);
  const rrule = "FREQ=WEEKLY;BYDAY=MO,TU";
  const recurring = day1.flatMap((slot) => [
    {
      rrule,
      startTime: hhmm(slot.start - s.leadMinutes),
      endTime: hhmm(slot.start + s.burstMinutes),
      size: s.burst,
    },
    // A minute apart, so the burst's end (ready count 0) and this start never tie.
    {
      rrule,
      startTime: hhmm(slot.start + s.burstMinutes + 1),
      endTime: hhmm(slot.end + s.tailMinutes),
      size: s.trickle,
    },
  ]);
  return {
    name: "lablink",
    initialSize: 0,
    schedule: [],
    warmPool: { desiredReady: 0, maxSize: s.maxSize },
    recurring,
    recovery: true,
    injectedFailures: s.injectedFailures,
    maxHoldMinutes: s.maxHoldMinutes,
    idleReleaseMinutes: s.idleReleaseMinutes,
    reminderLeadMinutes: s.reminderLeadMinutes,
    agentIdleAfterMinutes: s.agentIdleAfterMinutes,
  };
}

export function waitPercentile(r: SimResult, p: number): number {
  return percentile(
    [...r.waits].sort((a, b) => a - b),
    p,
  );
}

export function idleSavedPct(staticRun: SimResult, lablink: SimResult): number {
  return Math.round((1 - lablink.idleGpuHours / staticRun.idleGpuHours) * 100);
}

export function formatReport(staticRun: SimResult, lablink: SimResult): string {
  const rows: [string, (r: SimResult) => string][] = [
    ["VMs at the peak", (r) => String(r.peakVms)],
    ["GPU-hours paid", (r) => r.paidGpuHours.toFixed(1)],
    ["idle GPU-hours", (r) => r.idleGpuHours.toFixed(1)],
    ["GPU-hours in use", (r) => r.inUseGpuHours.toFixed(1)],
    ["wait p50 (s)", (r) => String(waitPercentile(r, 50))],
    ["wait p95 (s)", (r) => String(waitPercentile(r, 95))],
    ["wait max (s)", (r) => String(Math.max(0, ...r.waits))],
    [
      "arrivals / VMs needed / unserved",
      (r) => `${r.arrivals} / ${r.waits.length + r.unserved} / ${r.unserved}`,
    ],
    ["released by hold / idle limit", (r) => `${r.policyReleases.hold} / ${r.policyReleases.idle}`],
    ["work lost (release without warning)", (r) => String(r.releasesWithoutWarning)],
    ["one VM, two people (ticks)", (r) => String(r.doubleHolds)],
    [
      "agents killed / back after recovery",
      (r) => `${r.failures.injected} / ${r.failures.recovered}`,
    ],
  ];
  const w = Math.max(...rows.map(([l]) => l.length));
  const lines = [
    `| ${"".padEnd(w)} | static pool | LabLink policies |`,
    `| ${"-".repeat(w)} | ----------: | ---------------: |`,
    ...rows.map(
      ([label, f]) =>
        `| ${label.padEnd(w)} | ${f(staticRun).padStart(11)} | ${f(lablink).padStart(16)} |`,
    ),
  ];
  lines.push(
    `idle GPU-hours saved: ${idleSavedPct(staticRun, lablink)} %, wait p95: ${waitPercentile(lablink, 95)} s vs ${waitPercentile(staticRun, 95)} s`,
  );
  return lines.join("\n");
}
