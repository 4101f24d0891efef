import { eq } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { type Fleet, fleets } from "../db/schema";
import { DomainError } from "./errors";

/**
 * The fleet, or NOT_FOUND; STATE_CONFLICT when it is destroyed or being destroyed. `forUpdate`
 * locks its row until the transaction ends, for a setting changed with its from/to audited.
 */
export async function liveFleet(
  db: DbOrTx,
  fleetId: string,
  opts: { forUpdate?: boolean } = {},
): Promise<Fleet> {
  const query = db.select().from(fleets).where(eq(fleets.id, fleetId));
  const [fleet] = await (opts.forUpdate ? query.for("update") : query);
  if (!fleet) throw new DomainError("NOT_FOUND", "No such fleet.", { fleetId });
  if (fleet.status === "destroyed" || fleet.status === "destroying")
    throw new DomainError("STATE_CONFLICT", `Fleet ${fleet.name} is ${fleet.status}.`, {
      status: fleet.status,
    });
  return fleet;
}
