/**
 * Local fleets with several workers: each fleet is owned by one worker (a session advisory lock),
 * another worker cannot take it while the owner lives, takes it once the owner's connection is
 * gone, and leaves the fleet's operations queued for the owner.
 */
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FleetDriver } from "../../server/cloud/driver";
import { LocalFleetOwnership } from "../../server/cloud/local/ownership";
import { operations } from "../../server/db/schema";
import { requestOperation } from "../../server/domain/operations";
import { executeOperation } from "../../server/jobs/operations";
import { logger } from "../../server/log";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeFleet } from "../fixtures";

let t: TestDatabase;
const owners: LocalFleetOwnership[] = [];
const owner = () => {
  const o = new LocalFleetOwnership(t.url);
  owners.push(o);
  return o;
};

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  for (const o of owners) await o.close().catch(() => undefined);
  await t?.drop();
});

describe("local fleet ownership", () => {
  it("gives each fleet to one worker; the other takes it when the owner's connection goes", async () => {
    const [f1, f2] = ["own-a", "own-b"];
    const a = owner();
    const b = owner();
    expect(await a.sync(async () => [f1, f2])).toEqual(new Set([f1, f2]));
    expect(await b.sync(async () => [f1, f2])).toEqual(new Set());
    expect(await b.claim(f1)).toBe(false);
    // Syncing again keeps what it holds (and does not stack locks that a release would miss).
    expect(await a.sync(async () => [f1, f2])).toEqual(new Set([f1, f2]));

    // A fleet no longer live (destroyed) is let go and free for the next claim.
    expect(await a.sync(async () => [f1])).toEqual(new Set([f1]));
    expect(await b.claim(f2)).toBe(true);

    // The owner dies: its connection closes, and the other worker takes its fleet.
    await a.close();
    expect(await b.sync(async () => [f1, f2])).toEqual(new Set([f1, f2]));
  });

  it("a worker that does not own a local fleet leaves its operation queued for the owner", async () => {
    const fleet = await makeFleet(t.db, { driver: "local", desiredSize: 0 });
    const op = await requestOperation(t.db, {
      fleetId: fleet.id,
      kind: "fleet.scale",
      params: { size: 1 },
      actor: { kind: "system", id: null },
    });
    const holder = owner();
    expect(await holder.claim(fleet.id)).toBe(true);
    const other = owner();
    let applied = 0;
    const driver = {
      name: "local",
      apply: async () => {
        applied++;
      },
    } as unknown as FleetDriver;
    const result = await executeOperation(
      {
        db: t.db,
        drivers: { local: driver },
        log: logger,
        mayRun: (fleetId) => other.claim(fleetId),
      },
      op.id,
    );
    expect(result.status).toBe("left to the fleet's owner");
    expect(applied).toBe(0);
    const [row] = await t.db.select().from(operations).where(eq(operations.id, op.id));
    expect(row).toMatchObject({ status: "queued", attempts: 0 });

    // The owner runs it.
    const ran = await executeOperation(
      {
        db: t.db,
        drivers: { local: driver },
        log: logger,
        mayRun: (fleetId) => holder.claim(fleetId),
      },
      op.id,
    );
    expect(ran.status).toBe("succeeded");
    expect(applied).toBe(1);
  });
});
