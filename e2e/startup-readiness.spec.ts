import { query, waitForOperation } from "./admin-api";
import { expect, mutate, test, uniqueName } from "./fixtures";

test("admin sees why a VM whose startup script failed is failed, on the dashboard and the VM page", async ({
  signInAs,
}) => {
  const { page, context } = await signInAs("admin", "startup-admin");
  const name = uniqueName("broken")
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-");
  // A real local VM: its simulated boot runs this script with bash and the policy fails it.
  const res = await mutate(context.request, "fleet.create", {
    name,
    driver: "local",
    instanceType: "local.sim",
    gpuCount: 1,
    size: 1,
    config: {
      startupScript: "echo 'fetching model weights'\necho 'E: weights.bin not found' >&2\nexit 3\n",
      startupOnError: "fail",
    },
  });
  expect(res.error).toBeUndefined();
  const { fleetId, operation } = res.data as { fleetId: string; operation: { id: string } };
  await waitForOperation(context.request, operation.id);

  type Row = { id: string; state: string; startupIssue: string | null };
  let vm: Row | undefined;
  await expect
    .poll(
      async () => {
        const list = await query<{ rows: Row[] }>(context.request, "vm.list", {
          fleetId,
          limit: 10,
          offset: 0,
        });
        vm = list.rows[0];
        return vm?.state;
      },
      { message: "the VM fails", timeout: 60_000, intervals: [500, 1_000] },
    )
    .toBe("failed");

  await page.goto("/admin");
  await page.getByLabel("Search").fill(name);
  const row = page.getByTestId("vm-row").filter({ hasText: name });
  await expect(row.getByTestId("vm-row-startup-issue")).toHaveText("startup failed");

  await page.goto(`/admin/vms/${vm?.id}`);
  await expect(page.getByTestId("detail-state")).toContainText(/failed/i);
  const issue = page.getByTestId("detail-startup-issue");
  await expect(issue).toContainText("exited with code 3 (on error: fail)");
  await expect(issue).toContainText("E: weights.bin not found");

  // Cleanup: the fleet's VM is gone afterwards, so the shared pool is as it was.
  await mutate(context.request, "fleet.destroy", { fleetId });
});
