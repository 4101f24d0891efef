import { expect, FLEET_SIZE, mutate, test, waitForReady } from "./fixtures";

test("admin sees every VM with state, holder, GPU health and last heartbeat", async ({
  signInAs,
  request,
}) => {
  await waitForReady(request, 1);
  const researcher = await signInAs("researcher", "held-by");
  const claim = await mutate(researcher.context.request, "vm.claim");
  expect(claim.error, "the researcher should get a VM").toBeUndefined();
  const vmName = (claim.data as { name: string }).name;

  const { page } = await signInAs("admin");
  await expect(page.getByRole("heading", { name: "Fleet dashboard" })).toBeVisible();
  const table = page.getByTestId("vm-table");
  const rows = table.getByTestId("vm-row");
  await expect(rows).toHaveCount(FLEET_SIZE);
  await expect(page.getByTestId("vm-total")).toHaveText(`1–${FLEET_SIZE} of ${FLEET_SIZE}`);

  const held = rows.filter({ hasText: vmName });
  await expect(held).toHaveCount(1);
  await expect(held.getByTestId("vm-row-state")).toHaveText("claimed");
  const cells = held.getByRole("cell");
  await expect(cells.nth(3)).toHaveText(researcher.name); // Holder
  await expect(cells.nth(4)).toContainText("healthy"); // GPU health
  await expect(cells.nth(4)).not.toContainText("unhealthy");
  await expect(cells.nth(5)).toHaveText(/^\d+s ago$/); // Last heartbeat: agents beat every 2 s here

  await page.getByLabel("State", { exact: true }).selectOption("claimed");
  await expect(rows).toHaveCount(1);
  await expect(rows.first()).toContainText(researcher.name);
  await expect(page.getByTestId("vm-total")).toHaveText("1–1 of 1");

  await page.getByLabel("State", { exact: true }).selectOption("");
  await page.getByLabel("Search", { exact: true }).fill(researcher.name);
  await expect(rows).toHaveCount(1);
  await expect(rows.first()).toContainText(vmName);
});
