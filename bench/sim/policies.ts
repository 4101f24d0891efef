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
 * - Session slots (a recurring schedule: the published timetable): the fleet is scaled to the
 *   expected head count (booked × (1 − usual no-show rate), plus a small margin) `leadMinutes`
 *   before each session, so a VM that takes up to 8 min to boot is ready for the arrival burst,
 *   and to 0 `tailMinutes` after it; VMs still held then stay until their holders are done.
 * - Idle release after 30 min of reported idleness, with a reminder 10 min before; the agent
 *   reports idleness after 10 min (so a coffee break never costs anyone their VM, a walk-away
 *   at lunch or in the evening does, after a warning).
 * - A 5-hour hold limit (longer than any session) as the backstop for a VM kept busy overnight.
 */
export const LABLINK_SETTINGS = {
  expectedNoShowRate: 0.1,
  margin: 1,
  leadMinutes: 20,
  tailMinutes: 20,
  maxHoldMinutes: 300,
  idleReleaseMinutes: 30,
  reminderLeadMinutes: 10,
  agentIdleAfterMinutes: 10,
};

export function lablinkPolicy(trace: Trace, s = LABLINK_SETTINGS): Policy {
  const booked = trace.participants.length;
  const size = Math.ceil(booked * (1 - s.expectedNoShowRate)) + s.margin;
  const schedule = trace.slots.flatMap((slot) => [
    { at: Math.max(1, slot.start - s.leadMinutes), size },
    { at: slot.end + s.tailMinutes, size: 0 },
  ]);
  return {
    name: "lablink",
    initialSize: 0,
    schedule,
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
