import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fleets, type users } from "../../server/db/schema";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeUser } from "../fixtures";
import { apiClient } from "./harness";

/** The fleet option "LabLink client image compatibility" (docs/original-api.md). */
let t: TestDatabase;
let api: ReturnType<typeof apiClient>;
let admin: typeof users.$inferSelect;

beforeAll(async () => {
  t = await createTestDatabase();
  api = apiClient(t.db);
  admin = await makeUser(t.db, "admin");
});
afterAll(() => t.drop());

const terraformFleet = (name: string, extra: Record<string, unknown> = {}) => ({
  driver: "terraform",
  name,
  instanceType: "g5.xlarge",
  size: 0,
  region: "us-west-2",
  image: "ghcr.io/talmolab/lablink-client-base-image:0.0.9a",
  ...extra,
});

describe("fleet.create with LabLink client image compatibility", () => {
  it("stores the flag and the subject software on a terraform fleet", async () => {
    const res = await api.mutate(
      "fleet.create",
      terraformFleet("compat-fleet", {
        clientImageCompat: true,
        config: { subjectSoftware: "sleap", startupOnError: "fail" },
      }),
      { userId: admin.id },
    );
    expect(res.status).toBe(200);
    const [row] = await t.db.select().from(fleets).where(eq(fleets.name, "compat-fleet"));
    expect(row?.clientImageCompat).toBe(true);
    expect(row?.config).toMatchObject({ subjectSoftware: "sleap", startupOnError: "fail" });
  });

  it("is off by default, refused on local fleets, and checks the subject software", async () => {
    expect(
      (await api.mutate("fleet.create", terraformFleet("plain-fleet"), { userId: admin.id }))
        .status,
    ).toBe(200);
    const [row] = await t.db.select().from(fleets).where(eq(fleets.name, "plain-fleet"));
    expect(row?.clientImageCompat).toBe(false);

    const local = await api.mutate(
      "fleet.create",
      {
        driver: "local",
        name: "local-compat",
        instanceType: "local.sim",
        size: 0,
        clientImageCompat: true,
      },
      { userId: admin.id },
    );
    expect(local.status).toBe(400);
    const bad = await api.mutate(
      "fleet.create",
      terraformFleet("bad-compat", {
        clientImageCompat: true,
        config: { subjectSoftware: "sleap; rm -rf /" },
      }),
      { userId: admin.id },
    );
    expect(bad.status).toBe(400);
  });
});
