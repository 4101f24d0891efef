import { expect, FLEET_SIZE, poolTotals, test, waitForReady } from "./fixtures";

test("admin drains a VM from its detail page, sees its history, and puts it back", async ({
  signInAs,
  request,
}) => {
  await waitForReady(request, FLEET_SIZE);
  const admin = await signInAs("admin");
  const { page } = admin;

  // Sorting by name puts local-1 first either way; open it from the table.
  const firstRow = page.getByTestId("vm-row").first();
  await expect(firstRow).toBeVisible();
  const vmName = (await firstRow.getByRole("link").textContent())?.trim() ?? "";
  await firstRow.getByRole("link").click();
  await expect(page.getByRole("heading", { level: 1 })).toContainText(vmName);
  await expect(page.getByTestId("detail-state")).toHaveText("ready");

  await page.getByRole("button", { name: "Drain" }).click();
  await expect(page.getByText("No one new can claim it")).toBeVisible();
  await page.getByRole("button", { name: "Yes, drain" }).click();
  await expect(page.getByTestId("detail-state")).toHaveText("draining");
  await expect(page.getByTestId("history")).toContainText("vm.drain");
  await expect.poll(async () => (await poolTotals(request)).ready).toBe(FLEET_SIZE - 1);

  await page.getByRole("button", { name: "Undrain" }).click();
  await page.getByRole("button", { name: "Yes, undrain" }).click();
  await expect(page.getByTestId("detail-state")).toHaveText("ready");
  await expect(page.getByTestId("history")).toContainText("vm.undrain");
  await waitForReady(request, FLEET_SIZE);
});

test("admin can filter the VM table by state from the state counts and sort by name", async ({
  signInAs,
  request,
}) => {
  await waitForReady(request, FLEET_SIZE);
  const { page } = await signInAs("admin");
  await expect(page.getByTestId("vm-row")).toHaveCount(FLEET_SIZE);
  await page.getByTestId("state-counts").getByRole("button", { name: /ready/ }).click();
  await expect(page.getByTestId("vm-total")).toHaveText(`1–${FLEET_SIZE} of ${FLEET_SIZE}`);
  const names = async () => page.getByTestId("vm-row").getByRole("link").allTextContents();
  const asc = await names();
  await page.getByRole("button", { name: "Name" }).click();
  await expect.poll(names).toEqual([...asc].reverse());
});
