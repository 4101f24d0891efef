import { fleetName } from "./admin-api";
import { expect, test } from "./fixtures";

test("admin creates a bring-your-own fleet, gets its enrollment token, scales it down and destroys it", async ({
  signInAs,
}) => {
  const { page } = await signInAs("admin", "byo-admin");
  await page.goto("/admin/fleets");
  const name = fleetName("byo");
  await page.getByLabel("Name", { exact: true }).fill(name);
  await page.getByLabel("Where").selectOption("byo");
  await page.getByLabel("VMs", { exact: true }).fill("3");
  await page.getByRole("button", { name: "Create fleet" }).click();

  // No operation: the token for its 3 machines is shown at once, this once.
  const result = page.getByTestId("byo-result");
  await expect(result).toContainText(`Fleet ${name} created.`);
  await expect(result).toContainText("Enrollment token for 3 machines");
  await expect(page.getByTestId("byo-token")).toHaveText(/^lle_[0-9a-f]{32}_/);
  const card = page.getByTestId("fleet-card").filter({ hasText: name });
  await expect(card.getByTestId("fleet-enrollment")).toHaveText(
    "Machines: 0 enrolled of 3 expected · 3 enrollments open",
  );

  await card.getByLabel("Machines expected").fill("1");
  await card.getByRole("button", { name: `Scale ${name}` }).click();
  await expect(result).toContainText("2 unused enrollments were retired");
  await expect(page.getByTestId("byo-token")).toHaveCount(0);
  await expect(card.getByTestId("fleet-enrollment")).toHaveText(
    "Machines: 0 enrolled of 1 expected · 1 enrollment open",
  );

  await card.getByRole("button", { name: `Destroy ${name}` }).click();
  await expect(page.getByText("takes every machine in it out of LabLink")).toBeVisible();
  await page.getByLabel("Fleet name").fill(name);
  await page.getByRole("button", { name: "Destroy fleet" }).click();
  await expect(result).toContainText(`Fleet ${name} destroyed: 0 machines were told to stop`);
  await expect(page.getByTestId("fleet-card").filter({ hasText: name })).toHaveCount(0);
});
