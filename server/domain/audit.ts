import type { DbOrTx } from "../db/client";
import { auditEvents } from "../db/schema";
import type { Actor } from "./vm-state";

/** Writes one audit row: who (actor + IP), did what, to what, when (the row's `at`). */
export async function audit(
  db: DbOrTx,
  actor: Actor,
  action: string,
  target: { kind: string; id: string | null },
  details: Record<string, unknown> = {},
): Promise<void> {
  await db.insert(auditEvents).values({
    actorKind: actor.kind,
    actorId: actor.id,
    ip: actor.ip ?? null,
    action,
    targetKind: target.kind,
    targetId: target.id,
    details,
  });
}
