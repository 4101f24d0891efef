import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fleets, type users } from "../../server/db/schema";
import { parseEnv } from "../../server/env";
import { createTestDatabase, type TestDatabase } from "../db";
import { makeUser } from "../fixtures";
import { apiClient } from "./harness";

/**
 * LABLINK_AGENT_IMAGE has no default (a placeholder image would boot VMs with nothing to run):
 * a server without it refuses terraform fleets that run the agent, with the setting's name.
 */
let t: TestDatabase;
let admin: typeof users.$inferSelect;

beforeAll(async () => {
  t = await createTestDatabase();
  admin = await makeUser(t.db, "admin");
});
afterAll(() => t.drop());

const terraformFleet = (name: string, extra: Record<string, unknown> = {}) => ({
  driver: "terraform",
  name,
  instanceType: "g5.xlarge",
  size: 1,
  region: "us-west-2",
  image: "registry.example.edu/lablink/lablink-research:0.1.0",
  ...extra,
});

describe("LABLINK_AGENT_IMAGE", () => {
  it("has no default", () => {
    expect(parseEnv({}).LABLINK_AGENT_IMAGE).toBeUndefined();
    expect(parseEnv({ LABLINK_AGENT_IMAGE: " r.example/a:1 " }).LABLINK_AGENT_IMAGE).toBe(
      "r.example/a:1",
    );
  });

  it("unset: fleet.create refuses a terraform fleet (412, the setting named) and stores nothing", async () => {
    const api = apiClient(t.db, { settings: { agentImage: undefined } });
    const res = await api.mutate("fleet.create", terraformFleet("no-image"), { userId: admin.id });
    expect(res.status).toBe(412);
    expect(res.error?.message).toMatch(/set LABLINK_AGENT_IMAGE on the server and worker/);
    expect(await t.db.select().from(fleets).where(eq(fleets.name, "no-image"))).toEqual([]);
  });

  it("unset: local fleets and LabLink-client-image fleets (which run no agent) are still created", async () => {
    const api = apiClient(t.db, { settings: { agentImage: undefined } });
    const compat = await api.mutate(
      "fleet.create",
      terraformFleet("compat-no-image", {
        clientImageCompat: true,
        config: { subjectSoftware: "sleap" },
      }),
      { userId: admin.id },
    );
    expect(compat.status).toBe(200);
    const local = await api.mutate(
      "fleet.create",
      { driver: "local", name: "local-no-image", instanceType: "local.sim", size: 0 },
      { userId: admin.id },
    );
    expect(local.status).toBe(200);
  });

  it("set: the terraform fleet is created", async () => {
    const api = apiClient(t.db, {
      settings: { agentImage: "registry.example.edu/lablink/lablink-agent:0.1.0" },
    });
    const res = await api.mutate("fleet.create", terraformFleet("with-image"), {
      userId: admin.id,
    });
    expect(res.status).toBe(200);
  });
});
