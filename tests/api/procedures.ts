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
  "vm.list": "admin",
  "vm.get": "admin",
  "vm.drain": "admin",
  "vm.undrain": "admin",
  "vm.forceRelease": "admin",
  "vm.markFailed": "admin",
  "fleet.list": "admin",
  "fleet.create": "admin",
  "fleet.scale": "admin",
  "fleet.destroy": "admin",
  "vm.reboot": "admin",
  "vm.terminate": "admin",
  "operation.list": "admin",
  "operation.get": "admin",
  "operation.logs": "admin",
  "operation.cancel": "admin",
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
