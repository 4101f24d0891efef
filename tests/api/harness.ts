import { eq, sql } from "drizzle-orm";
import superjson from "superjson";
import { handleTrpc } from "../../server/api/handler";
import type { SessionUser } from "../../server/api/trpc";
import { DEFAULT_RATE_LIMITS, type RateLimits } from "../../server/auth/rate-limit";
import type { Db } from "../../server/db/client";
import { users } from "../../server/db/schema";
import type { AgentSettings } from "../../server/domain/agents";

/**
 * Calls `/api/trpc` over real HTTP semantics (Request in, Response out) through the same fetch
 * handler the Next route uses. Sessions come from the `x-test-user` header, which only this
 * harness's context reads.
 */
export function apiClient(
  db: Db,
  options: {
    rateLimits?: Partial<RateLimits>;
    settings?: Omit<AgentSettings, "heartbeatIntervalS"> & { agentImage?: string };
  } = {},
) {
  const makeContext = (req: Request) => ({
    db,
    events: null,
    settings: {
      heartbeatIntervalS: 15,
      agentImage: "registry.example.edu/lablink/lablink-agent:0.1.0",
      ...options.settings,
      rateLimits: { ...DEFAULT_RATE_LIMITS, ...options.rateLimits },
    },
    getSession: async (): Promise<SessionUser | null> => {
      const id = req.headers.get("x-test-user");
      if (!id) return null;
      const [u] = await db.select().from(users).where(eq(users.id, id));
      return u ? { id: u.id, role: u.role } : null;
    },
  });

  async function call(
    type: "query" | "mutation",
    path: string,
    input: unknown,
    auth: { userId?: string; authorization?: string; rawBody?: string; ip?: string } = {},
  ) {
    const headers = new Headers({ "content-type": "application/json" });
    if (auth.ip) headers.set("x-lablink-client-ip", auth.ip);
    if (auth.userId) headers.set("x-test-user", auth.userId);
    if (auth.authorization) headers.set("authorization", auth.authorization);
    const encoded = input === undefined ? undefined : superjson.serialize(input);
    let req: Request;
    if (type === "query") {
      const qs =
        encoded === undefined ? "" : `?input=${encodeURIComponent(JSON.stringify(encoded))}`;
      req = new Request(`http://localhost/api/trpc/${path}${qs}`, { headers });
    } else {
      req = new Request(`http://localhost/api/trpc/${path}`, {
        method: "POST",
        headers,
        // Like the tRPC client: an absent input is still a serialized body.
        body: auth.rawBody ?? JSON.stringify(superjson.serialize(input)),
      });
    }
    const res = await handleTrpc(req, makeContext);
    const text = await res.text();
    let body: {
      result?: { data: unknown };
      error?: { json?: { message: string; data: Record<string, unknown> } };
    } = {};
    try {
      body = JSON.parse(text);
    } catch {
      // Leave body empty; tests assert on status.
    }
    const data = body.result?.data as { json: unknown; meta?: never } | undefined;
    return {
      status: res.status,
      headers: res.headers,
      data: data
        ? superjson.deserialize(data as Parameters<typeof superjson.deserialize>[0])
        : undefined,
      error: body.error?.json,
    };
  }

  return {
    query: (path: string, input?: unknown, auth?: Parameters<typeof call>[3]) =>
      call("query", path, input, auth),
    mutate: (path: string, input?: unknown, auth?: Parameters<typeof call>[3]) =>
      call("mutation", path, input, auth),
  };
}

/** Row counts of every table: "nothing was written" means these do not change. */
export async function tableCounts(db: Db): Promise<Record<string, number>> {
  const rows = await db.execute<{ table: string; n: number }>(
    sql.raw(`
      SELECT 'users' AS table, count(*)::int AS n FROM users UNION ALL
      SELECT 'vms', count(*)::int FROM vms UNION ALL
      SELECT 'fleets', count(*)::int FROM fleets UNION ALL
      SELECT 'agent_credentials', count(*)::int FROM agent_credentials UNION ALL
      SELECT 'groups', count(*)::int FROM groups UNION ALL
      SELECT 'group_members', count(*)::int FROM group_members UNION ALL
      SELECT 'fleet_groups', count(*)::int FROM fleet_groups UNION ALL
      SELECT 'enrollment_tokens', count(*)::int FROM enrollment_tokens UNION ALL
      SELECT 'api_tokens', count(*)::int FROM api_tokens UNION ALL
      SELECT 'enrollment_uses', coalesce(sum(uses), 0)::int FROM enrollment_tokens UNION ALL
      SELECT 'admins', count(*)::int FROM users WHERE role = 'admin' UNION ALL
      SELECT 'audit_events', count(*)::int FROM audit_events UNION ALL
      SELECT 'operations', count(*)::int FROM operations UNION ALL
      SELECT 'operation_logs', count(*)::int FROM operation_logs UNION ALL
      SELECT 'ssh_keys', count(*)::int FROM ssh_keys UNION ALL
      SELECT 'crd_handoffs', count(*)::int FROM crd_handoffs UNION ALL
      SELECT 'vm_logs', count(*)::int FROM vm_logs UNION ALL
      SELECT 'gpu_samples', count(*)::int FROM gpu_samples`),
  );
  return Object.fromEntries(rows.map((r) => [r.table, r.n]));
}
