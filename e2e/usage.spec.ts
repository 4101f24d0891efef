import { readFileSync } from "node:fs";
import { expect, mutate, test } from "./fixtures";

test("admin sees who used how many GPU-hours, changes the period and downloads a CSV", async ({
  signInAs,
}) => {
  const researcher = await signInAs("researcher", "usage-user");
  expect((await mutate(researcher.context.request, "vm.claim")).error).toBeUndefined();
  expect((await mutate(researcher.context.request, "vm.release")).error).toBeUndefined();

  const { page } = await signInAs("admin", "usage-admin");
  await page
    .getByRole("navigation", { name: "Admin" })
    .getByRole("link", { name: "Usage" })
    .click();
  await expect(page.getByRole("heading", { name: "Usage" })).toBeVisible();
  await expect(page.getByTestId("usage-total")).toContainText(/\d+ holds?, .* GPU-hours from/);
  const row = page.getByTestId("usage-user").filter({ hasText: researcher.name });
  await expect(row).toBeVisible();
  await expect(row.getByRole("cell").nth(1)).toHaveText("1");
  await expect(row.getByRole("cell").nth(4)).toHaveText("no");

  await page.getByLabel("Period").selectOption({ label: "Last 7 days" });
  await expect(page).toHaveURL(/[?&]days=7\b/);
  await expect(row).toBeVisible();

  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download CSV" }).click(),
  ]);
  expect(download.suggestedFilename()).toMatch(/^lablink-usage-7d-\d{4}-\d\d-\d\d\.csv$/);
  const csv = readFileSync((await download.path()) as string, "utf8");
  expect(csv.split("\r\n")[0]).toBe("researcher,email,holds,hours,gpu_hours,holding_now");
  expect(csv).toMatch(new RegExp(`^${researcher.name},[^,]*,1,[\\d.]+,[\\d.]+,false$`, "m"));
});
