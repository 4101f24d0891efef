import { expect, mutate, test } from "./fixtures";

test("another tool reads /api/openapi.json and calls LabLink as it says, with an admin's API token", async ({
  signInAs,
  playwright,
  baseURL,
  request,
}) => {
  // Public: it describes procedures, not data.
  const res = await request.get("/api/openapi.json");
  expect(res.status()).toBe(200);
  const doc = (await res.json()) as {
    openapi: string;
    paths: Record<string, { get?: { parameters?: { name: string }[] }; post?: object }>;
  };
  expect(doc.openapi).toBe("3.1.0");

  const admin = await signInAs("admin", "openapi");
  const created = await mutate(admin.context.request, "profile.apiTokens.create", {
    name: "openapi e2e",
    scope: "admin",
    expiresInDays: 1,
  });
  expect(created.error).toBeUndefined();
  const { token } = created.data as { token: string };
  const api = await playwright.request.newContext({
    baseURL,
    extraHTTPHeaders: { authorization: `Bearer ${token}` },
  });

  // A query, as described: GET, the input URL-encoded in superjson's envelope.
  expect(doc.paths["/api/trpc/vm.list"]?.get?.parameters?.[0]?.name).toBe("input");
  const input = encodeURIComponent(JSON.stringify({ json: { limit: 5 } }));
  const list = await api.get(`/api/trpc/vm.list?input=${input}`);
  expect(list.status()).toBe(200);
  const listed = (await list.json()) as {
    result: { data: { json: { rows: unknown[]; total: number } } };
  };
  expect(listed.result.data.json.rows.length).toBeLessThanOrEqual(5);
  expect(listed.result.data.json.total).toBeGreaterThan(0);

  // A mutation, as described: POST with {"json": input}.
  expect(doc.paths["/api/trpc/fleet.create"]?.post).toBeDefined();
  const fleets = (await (await api.get("/api/trpc/fleet.list")).json()) as {
    result: { data: { json: { id: string; name: string; maxHoldMinutes: number | null }[] } };
  };
  const fleet = fleets.result.data.json.find((f) => f.name === "local");
  expect(fleet).toBeDefined();
  const set = await api.post("/api/trpc/fleet.setQuota", {
    data: { json: { fleetId: fleet?.id, gpuHoursPerWeek: null } },
  });
  expect(set.status()).toBe(200);
  expect(await set.json()).toMatchObject({
    result: { data: { json: { fleetId: fleet?.id, gpuHoursPerWeek: null } } },
  });
  await api.dispose();
});
