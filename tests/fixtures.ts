import { randomUUID } from "node:crypto";
import { issueAgentToken } from "../server/auth/agent-tokens";
import type { DbOrTx } from "../server/db/client";
import {
  type Fleet,
  fleets,
  type UserRole,
  users,
  type Vm,
  type VmState,
  vms,
} from "../server/db/schema";

export async function makeUser(db: DbOrTx, role: UserRole = "researcher", name?: string) {
  const id = randomUUID();
  const label = name ?? `${role}-${id.slice(0, 8)}`;
  const [u] = await db
    .insert(users)
    .values({ id, name: label, email: `${label}@example.edu`, role })
    .returning();
  return u as typeof users.$inferSelect;
}

export async function makeUsers(db: DbOrTx, n: number, role: UserRole = "researcher") {
  const rows = Array.from({ length: n }, (_, i) => {
    const id = randomUUID();
    return {
      id,
      name: `${role}-${i}-${id.slice(0, 4)}`,
      email: `${role}-${i}-${id.slice(0, 8)}@example.edu`,
      role,
    };
  });
  const out: (typeof users.$inferSelect)[] = [];
  for (let i = 0; i < rows.length; i += 1000) {
    out.push(
      ...(await db
        .insert(users)
        .values(rows.slice(i, i + 1000))
        .returning()),
    );
  }
  return out;
}

export async function makeFleet(
  db: DbOrTx,
  overrides: Partial<typeof fleets.$inferInsert> = {},
): Promise<Fleet> {
  const [f] = await db
    .insert(fleets)
    .values({
      name: `fleet-${randomUUID().slice(0, 8)}`,
      driver: "local",
      instanceType: "g5.xlarge",
      gpuModel: "NVIDIA A10G",
      gpuCount: 1,
      status: "active",
      desiredSize: 0,
      ...overrides,
    })
    .returning();
  return f as Fleet;
}

/** Inserts VMs directly in a given state (tests only; the product moves VMs via transition()). */
export async function makeVms(
  db: DbOrTx,
  fleet: Fleet,
  n: number,
  state: VmState = "ready",
  extra: Partial<typeof vms.$inferInsert> = {},
): Promise<Vm[]> {
  const rows = Array.from({ length: n }, (_, i) => ({
    fleetId: fleet.id,
    name: `${fleet.name}-vm-${i}-${randomUUID().slice(0, 6)}`,
    state,
    healthy: state === "ready" || state === "claimed",
    bootId: "boot-1",
    ...extra,
  }));
  const out: Vm[] = [];
  for (let i = 0; i < rows.length; i += 1000) {
    out.push(
      ...(await db
        .insert(vms)
        .values(rows.slice(i, i + 1000))
        .returning()),
    );
  }
  return out;
}

export async function makeAgent(db: DbOrTx, vm: Vm): Promise<string> {
  return issueAgentToken(db, vm.id);
}

/** An `agent.heartbeat` input for a healthy, idle VM without GPUs (boot "boot-1", as makeVms). */
export function heartbeatInput(vmId: string, extra: Record<string, unknown> = {}) {
  return {
    vmId,
    bootId: "boot-1",
    gpus: [],
    health: { healthy: true, reasons: [] },
    inUse: false,
    idleSince: null,
    ...extra,
  };
}

/**
 * The secret part of an agent (`lla_`) or enrollment (`lle_`) token: the 43 base64url characters
 * after `<prefix>_<32 hex id>_`. Base64url may itself contain `_`, so splitting on the last
 * underscore would sometimes yield a one-letter fragment and a meaningless "not in the logs" check.
 */
export function tokenSecret(token: string): string {
  const m = /^ll[ae]_[0-9a-f]{32}_([A-Za-z0-9_-]{43})$/.exec(token);
  if (!m?.[1]) throw new Error("not a LabLink agent or enrollment token");
  return m[1];
}
