import { appRouter } from "../../server/api/root";

export type Tier = "public" | "researcher" | "admin" | "agent";

/**
 * Every procedure's access tier. The API tests walk the router itself and fail for any procedure
 * missing here, so a new procedure cannot ship without a decision about who may call it.
 */
export const ACCESS: Record<string, Tier> = {
  "pool.summary": "public",
  "vm.claim": "researcher",
  "vm.mine": "researcher",
  "vm.release": "researcher",
  "vm.connectCrd": "researcher",
  "profile.sshKeys.list": "researcher",
  "profile.sshKeys.add": "researcher",
  "profile.sshKeys.remove": "researcher",
  "vm.list": "admin",
  "fleet.list": "admin",
  "agent.register": "agent",
  "agent.heartbeat": "agent",
  "agent.ack": "agent",
  "agent.poll": "agent",
};

type ProcedureDef = { _def: { type: "query" | "mutation" | "subscription" } };

export function allProcedures(): { path: string; type: "query" | "mutation" | "subscription" }[] {
  const procs = appRouter._def.procedures as unknown as Record<string, ProcedureDef>;
  return Object.entries(procs).map(([path, p]) => ({ path, type: p._def.type }));
}
