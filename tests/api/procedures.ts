import { appRouter } from "../../server/api/root";

/**
 * - public: anyone; `pool.summary` shows each caller only what they may claim
 * - researcher: any signed-in user; admin: signed-in admins (role re-read on every call)
 * - agent: a VM's own agent token, acting for that VM only
 * - enrollment: an enrollment token (bring-your-own machines), spent by the call
 * - adminSession: an admin signed in with a session, never an API token (managing API tokens)
 */
export type Tier = "public" | "researcher" | "admin" | "adminSession" | "agent" | "enrollment";

/**
 * Every procedure's access tier. The API tests walk the router itself and fail for any procedure
 * missing here, so a new procedure cannot ship without a decision about who may call it.
 */
export const ACCESS: Record<string, Tier> = {
  "pool.summary": "public",
  "vm.claim": "researcher",
  "vm.mine": "researcher",
  "vm.lastEnded": "researcher",
  "vm.desktop": "researcher",
  "vm.release": "researcher",
  "vm.connectCrd": "researcher",
  "profile.sshKeys.list": "researcher",
  "profile.groups": "researcher",
  "profile.sshKeys.add": "researcher",
  "profile.sshKeys.remove": "researcher",
  "profile.apiTokens.list": "adminSession",
  "profile.apiTokens.create": "adminSession",
  "profile.apiTokens.revoke": "adminSession",
  "vm.list": "admin",
  "vm.get": "admin",
  "vm.logs": "admin",
  "vm.gpuHistory": "admin",
  "vm.drain": "admin",
  "vm.undrain": "admin",
  "vm.forceRelease": "admin",
  "vm.markFailed": "admin",
  "fleet.list": "admin",
  "fleet.create": "admin",
  "fleet.scale": "admin",
  "fleet.setHoldLimit": "admin",
  "fleet.setHoldExtension": "admin",
  "fleet.setIdleLimit": "admin",
  "fleet.setWorkDownloadLimit": "admin",
  "fleet.setWorkArchive": "admin",
  "profile.workArchives": "researcher",
  "usage.report": "admin",
  "fleet.setQuota": "admin",
  "fleet.setRecoveryPolicy": "admin",
  "fleet.schedules": "admin",
  "fleet.scheduleScale": "admin",
  "fleet.cancelSchedule": "admin",
  "fleet.scheduleDestroy": "admin",
  "fleet.recurringSchedules": "admin",
  "fleet.addRecurringSchedule": "admin",
  "fleet.deleteRecurringSchedule": "admin",
  "fleet.setWarmPool": "admin",
  "fleet.pauseWarmPool": "admin",
  "fleet.resumeWarmPool": "admin",
  "vm.keepIdle": "researcher",
  "vm.extend": "researcher",
  "fleet.destroy": "admin",
  "vm.reboot": "admin",
  "vm.terminate": "admin",
  "operation.list": "admin",
  "operation.get": "admin",
  "operation.logs": "admin",
  "operation.cancel": "admin",
  "agent.enroll": "enrollment",
  "agent.register": "agent",
  "agent.heartbeat": "agent",
  "agent.ack": "agent",
  "agent.poll": "agent",
  "agent.logs": "agent",
  "agent.rotate": "agent",
  "user.me": "researcher",
  "user.list": "admin",
  "user.setRole": "admin",
  "group.list": "admin",
  "group.members": "admin",
  "group.create": "admin",
  "group.delete": "admin",
  "group.addMember": "admin",
  "group.removeMember": "admin",
  "group.setFleetGroups": "admin",
  "enrollment.create": "admin",
  "enrollment.list": "admin",
  "enrollment.revoke": "admin",
  "audit.list": "admin",
  "webhook.list": "admin",
  "webhook.create": "admin",
  "webhook.update": "admin",
  "webhook.delete": "admin",
  "webhook.test": "admin",
  "webhook.deliveries": "admin",
  "booking.fleets": "researcher",
  "booking.mine": "researcher",
  "booking.book": "researcher",
  "booking.cancel": "researcher",
  "booking.claim": "researcher",
  "booking.setPolicy": "admin",
  "booking.block": "admin",
  "booking.cancelAny": "admin",
  "booking.calendar": "admin",
};

/** What the authorization matrix needs to build a valid input for any procedure. */
export type World = {
  /** The VM of the "agent of this VM" principal. */
  vmId: string;
  /** A fleet restricted to the first researcher's group. */
  restrictedFleetId: string;
  byoFleetId: string;
  /** A group and a user that admin procedures may freely change. */
  groupId: string;
  userId: string;
  /** Deleted / revoked by the admin's call (not the ones other principals use). */
  spareGroupId: string;
  spareEnrollmentTokenId: string;
  unique: () => string;
};

const gpus = [] as const;
const NOBODY = "00000000-0000-4000-8000-00000000beef";
const health = { healthy: true, reasons: [] as string[] };

/**
 * A valid input for every procedure, so the matrix tests the access decision rather than input
 * validation. The matrix fails for a procedure without one.
 */
export const SAMPLE_INPUT: Record<string, (w: World) => unknown> = {
  "pool.summary": () => undefined,
  "vm.claim": (w) => ({ fleetId: w.restrictedFleetId }),
  "vm.mine": () => undefined,
  "vm.lastEnded": () => undefined,
  "vm.desktop": (w) => ({ vmId: w.vmId }),
  "vm.release": () => undefined,
  "vm.list": () => ({ limit: 5 }),
  "fleet.list": () => undefined,
  // The researcher holds no VM here: a valid request that the domain answers with 404.
  "vm.connectCrd": () => ({
    command:
      'DISPLAY= /opt/google/chrome-remote-desktop/start-host --code="4/0AbCdEfGhIjKlMnOp" --redirect-url="https://remotedesktop.google.com/_/oauthredirect" --name=$(hostname)',
    pin: "493817",
  }),
  "profile.sshKeys.list": () => undefined,
  "profile.groups": () => undefined,
  "profile.workArchives": () => undefined,
  // Malformed on purpose (validated after the access decision): nothing is stored.
  "profile.sshKeys.add": () => ({ publicKey: "ssh-ed25519 AAAA!!!!", label: "matrix" }),
  "profile.sshKeys.remove": () => ({ id: NOBODY }),
  "profile.apiTokens.list": () => undefined,
  "profile.apiTokens.create": (w) => ({ name: `matrix-${w.unique()}`, scope: "read" }),
  // Someone else's token (or none): the admin's call answers 404 and writes nothing.
  "profile.apiTokens.revoke": () => ({ id: NOBODY }),
  // Actions on things that do not exist: the access decision is made before the 404.
  "vm.get": (w) => ({ vmId: w.vmId }),
  "vm.logs": (w) => ({ vmId: w.vmId, afterId: 0, source: "agent", limit: 10 }),
  "vm.gpuHistory": (w) => ({ vmId: w.vmId, hours: 6 }),
  "vm.drain": () => ({ vmId: NOBODY }),
  "vm.undrain": () => ({ vmId: NOBODY }),
  "vm.forceRelease": () => ({ vmId: NOBODY }),
  "vm.markFailed": () => ({ vmId: NOBODY, reason: "matrix test" }),
  "vm.reboot": () => ({ vmId: NOBODY }),
  "vm.terminate": () => ({ vmId: NOBODY }),
  "fleet.create": (w) => ({
    name: `matrix-${w.unique()}`,
    driver: "local",
    instanceType: "local.sim",
    size: 0,
  }),
  "fleet.scale": () => ({ fleetId: NOBODY, size: 1 }),
  "fleet.setHoldLimit": () => ({ fleetId: NOBODY, maxHoldMinutes: 60 }),
  "fleet.setHoldExtension": () => ({
    fleetId: NOBODY,
    rules: { stepMinutes: 30, maxExtensions: 2, maxTotalMinutes: null },
  }),
  "fleet.setIdleLimit": () => ({ fleetId: NOBODY, idleReleaseMinutes: 60 }),
  "fleet.setWorkDownloadLimit": () => ({ fleetId: NOBODY, maxMib: 2048 }),
  "fleet.setWorkArchive": () => ({ fleetId: NOBODY, archive: null }),
  "usage.report": () => ({ days: 7 }),
  "fleet.setQuota": () => ({ fleetId: NOBODY, gpuHoursPerWeek: 20 }),
  "fleet.setRecoveryPolicy": () => ({ fleetId: NOBODY, policy: { silentMinutes: 5 } }),
  "fleet.schedules": () => ({ fleetId: NOBODY }),
  "fleet.scheduleScale": () => ({ fleetId: NOBODY, at: new Date(Date.now() + 3_600_000), size: 1 }),
  "fleet.cancelSchedule": () => ({ scheduleId: NOBODY }),
  "fleet.scheduleDestroy": () => ({ fleetId: NOBODY, at: new Date(Date.now() + 3_600_000) }),
  "fleet.recurringSchedules": () => ({ fleetId: NOBODY }),
  "fleet.addRecurringSchedule": () => ({
    fleetId: NOBODY,
    rrule: "FREQ=WEEKLY;BYDAY=TU,TH",
    timezone: "Europe/London",
    startTime: "09:00",
    endTime: "17:00",
    size: 2,
  }),
  "fleet.deleteRecurringSchedule": () => ({ scheduleId: NOBODY }),
  "fleet.setWarmPool": () => ({ fleetId: NOBODY, policy: { desiredReady: 1, maxSize: 2 } }),
  "fleet.pauseWarmPool": () => ({ fleetId: NOBODY }),
  "fleet.resumeWarmPool": () => ({ fleetId: NOBODY }),
  "vm.keepIdle": () => undefined,
  "vm.extend": () => undefined,
  "fleet.destroy": () => ({ fleetId: NOBODY }),
  "operation.list": () => ({ limit: 5 }),
  "operation.get": () => ({ operationId: NOBODY }),
  "operation.logs": () => ({ operationId: NOBODY }),
  "operation.cancel": () => ({ operationId: NOBODY }),
  "agent.enroll": (w) => ({
    hostname: `ws-${w.unique()}`,
    agentVersion: "0.1.0",
    protocolVersion: 1,
  }),
  "agent.register": (w) => ({
    vmId: w.vmId,
    bootId: "boot-1",
    hostname: "h",
    agentVersion: "0.1.0",
    protocolVersion: 1,
    gpus,
    health,
  }),
  "agent.heartbeat": (w) => ({
    vmId: w.vmId,
    bootId: "boot-1",
    gpus,
    health,
    inUse: false,
    idleSince: null,
  }),
  "agent.ack": (w) => ({
    vmId: w.vmId,
    type: "assign",
    assignmentId: "00000000-0000-4000-8000-000000000000",
    ok: true,
  }),
  "agent.poll": (w) => ({ vmId: w.vmId, waitMs: 0 }),
  "agent.rotate": (w) => ({ vmId: w.vmId, assignmentId: "00000000-0000-4000-8000-000000000000" }),
  "agent.logs": (w) => ({
    vmId: w.vmId,
    bootId: "boot-1",
    lines: [{ at: "2026-11-27T07:00:00.000Z", source: "agent", level: "info", message: "matrix" }],
  }),
  "user.me": () => undefined,
  "user.list": () => ({ limit: 5 }),
  "user.setRole": (w) => ({ userId: w.userId, role: "researcher" }),
  "group.list": () => undefined,
  "group.members": (w) => ({ groupId: w.groupId }),
  "group.create": (w) => ({ name: `group-${w.unique()}` }),
  "group.delete": (w) => ({ groupId: w.spareGroupId }),
  "group.addMember": (w) => ({ groupId: w.groupId, userId: w.userId }),
  "group.removeMember": (w) => ({ groupId: w.groupId, userId: w.userId }),
  "group.setFleetGroups": (w) => ({ fleetId: w.byoFleetId, groupIds: [w.groupId] }),
  "enrollment.create": (w) => ({ fleetId: w.byoFleetId, maxUses: 1 }),
  "enrollment.list": () => ({}),
  "enrollment.revoke": (w) => ({ id: w.spareEnrollmentTokenId }),
  "audit.list": () => ({ action: "vm.*", limit: 5 }),
  // http: is refused outside tests and development: the matrix still tests access first.
  "webhook.list": () => undefined,
  "webhook.create": () => ({
    url: "https://hooks.example.edu/lablink",
    events: ["vm.failed"],
    format: "lablink",
  }),
  "webhook.update": () => ({ id: NOBODY, enabled: false }),
  "webhook.delete": () => ({ id: NOBODY }),
  "webhook.test": () => ({ id: NOBODY }),
  "webhook.deliveries": () => ({ webhookId: NOBODY, limit: 5 }),
  "booking.fleets": () => undefined,
  "booking.mine": () => undefined,
  // No such fleet / booking: the access decision comes first, then the domain's 404.
  "booking.book": () => ({
    fleetId: NOBODY,
    startsAt: new Date(Date.now() + 3_600_000),
    minutes: 60,
  }),
  "booking.cancel": () => ({ bookingId: NOBODY }),
  "booking.claim": () => ({ bookingId: NOBODY }),
  "booking.setPolicy": () => ({ fleetId: NOBODY, policy: { seats: 1 } }),
  "booking.block": () => ({
    fleetId: NOBODY,
    startsAt: new Date(Date.now() + 3_600_000),
    minutes: 60,
    label: "matrix",
    emails: ["nobody@example.edu"],
  }),
  "booking.cancelAny": () => ({ bookingId: NOBODY }),
  "booking.calendar": () => ({ fleetId: NOBODY, from: new Date(), days: 1 }),
};

type ProcedureDef = { _def: { type: "query" | "mutation" | "subscription" } };

export function allProcedures(): { path: string; type: "query" | "mutation" | "subscription" }[] {
  const procs = appRouter._def.procedures as unknown as Record<string, ProcedureDef>;
  return Object.entries(procs).map(([path, p]) => ({ path, type: p._def.type }));
}
