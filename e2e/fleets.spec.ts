import { expect, test, uniqueName } from "./fixtures";

test("admin creates a local fleet, watches it come up with its log, scales it and destroys it", async ({
  signInAs,
}) => {
  const { page } = await signInAs("admin", "fleet-admin");
  await page.getByRole("link", { name: "Fleets", exact: true }).click();
  await expect(page.getByRole("heading", { name: "Create a fleet" })).toBeVisible();

  // The server's validation explains a bad name next to the field.
  await page.getByLabel("Name", { exact: true }).fill("Bad Name!");
  await page.getByRole("button", { name: "Create fleet" }).click();
  await expect(page.getByText("use lowercase letters, digits and dashes")).toBeVisible();

  const name = uniqueName("lab")
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-");
  await page.getByLabel("Name", { exact: true }).fill(name);
  await page.getByLabel("VMs", { exact: true }).fill("2");
  await page.getByRole("button", { name: "Create fleet" }).click();
  await expect(page.getByTestId("operation-status")).toHaveText("succeeded", { timeout: 60_000 });
  await expect(page.getByTestId("operation-log")).not.toHaveText("Waiting for the worker…");

  const card = page.getByTestId("fleet-card").filter({ hasText: name });
  await expect(card.getByTestId("fleet-counts")).toHaveText("2 ready", { timeout: 30_000 });

  await card.getByLabel("Size").fill("1");
  await card.getByRole("button", { name: `Scale ${name}` }).click();
  await expect(page.getByTestId("operation-status")).toHaveText("succeeded", { timeout: 60_000 });
  await expect(card.getByTestId("fleet-counts")).toHaveText("1 ready", { timeout: 30_000 });

  await card.getByRole("button", { name: `Destroy ${name}` }).click();
  const confirm = page.getByRole("button", { name: "Destroy fleet" });
  await expect(confirm).toBeDisabled();
  await page.getByLabel("Fleet name").fill(name);
  await confirm.click();
  await expect(page.getByTestId("operation-status")).toHaveText("succeeded", { timeout: 60_000 });
  await expect(page.getByTestId("fleet-card").filter({ hasText: name })).toHaveCount(0, {
    timeout: 30_000,
  });
});
