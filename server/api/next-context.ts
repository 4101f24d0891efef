import { auth } from "../auth/config";
import { getDatabase } from "../db/client";
import { agentSettingsFrom } from "../domain/agents";
import { env } from "../env";
import { getEventHub } from "../events";
import type { Context, SessionUser } from "./trpc";

/** Context for requests served by Next: Auth.js session, shared pool, shared event hub. */
export function nextContext(req: Request): Omit<Context, "headers" | "ip" | "signal"> {
  return {
    db: getDatabase().db,
    events: getEventHub(),
    settings: { ...agentSettingsFrom(env()), agentImage: env().LABLINK_AGENT_IMAGE },
    getSession: async (): Promise<SessionUser | null> => {
      // Agents never carry a session; skip the cookie work for them.
      if (req.headers.get("authorization")) return null;
      const session = await auth();
      return session?.user?.id ? { id: session.user.id, role: session.user.role } : null;
    },
  };
}
