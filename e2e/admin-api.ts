import type { APIRequestContext } from "@playwright/test";
import { expect, mutate } from "./fixtures";

/** Calls a tRPC query with the context's session cookie (superjson input and output). */
export async function query<T>(request: APIRequestContext, path: string, input?: unknown) {
  const qs =
    input === undefined ? "" : `?input=${encodeURIComponent(JSON.stringify({ json: input }))}`;
  const res = await request.get(`/api/trpc/${path}${qs}`);
  expect(res.ok(), `${path} answered ${res.status()}`).toBe(true);
  const body = (await res.json()) as { result: { data: { json: T } } };
  return body.result.data.json;
}

/** Waits for an admin operation to finish, and expects it to have succeeded. */
export async function waitForOperation(request: APIRequestContext, operationId: string) {
  await expect
    .poll(
      async () =>
        (await query<{ status: string }>(request, "operation.get", { operationId })).status,
      { message: `operation ${operationId}`, timeout: 60_000, intervals: [500, 1_000] },
    )
    .toBe("succeeded");
}

/** Creates a local fleet through the admin API and waits until its VMs are ready. */
export async function createLocalFleet(
  request: APIRequestContext,
  spec: { name: string; size: number; maxHoldMinutes?: number | null },
): Promise<string> {
  const res = await mutate(request, "fleet.create", {
    driver: "local",
    instanceType: "local.sim",
    gpuModel: "NVIDIA L4",
    gpuCount: 1,
    ...spec,
  });
  expect(res.error).toBeUndefined();
  const { fleetId, operation } = res.data as { fleetId: string; operation: { id: string } };
  await waitForOperation(request, operation.id);
  await expect
    .poll(
      async () => {
        const pool = await query<{ fleets: { fleetId: string; ready: number }[] }>(
          request,
          "pool.summary",
        );
        return pool.fleets.find((f) => f.fleetId === fleetId)?.ready ?? 0;
      },
      { message: `fleet ${spec.name} ready`, timeout: 45_000 },
    )
    .toBe(spec.size);
  return fleetId;
}

/** Destroys a fleet through the admin API and waits for its VMs to be gone. */
export async function destroyFleet(request: APIRequestContext, fleetId: string) {
  const res = await mutate(request, "fleet.destroy", { fleetId });
  if (res.error) throw new Error(`destroy failed: ${res.error}`);
  await waitForOperation(request, (res.data as { operation: { id: string } }).operation.id);
}

/** A fleet name the create form accepts, unique to this run. */
export function fleetName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
}
