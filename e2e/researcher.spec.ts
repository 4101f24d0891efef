import { destroyFleet } from "./admin-api";
import { expect, FLEET_SIZE, mutate, test, uniqueName, waitForReady } from "./fixtures";

test("researcher can claim a GPU VM, see it, and release it", async ({ signInAs, request }) => {
  await waitForReady(request, 1);
  const { page } = await signInAs("researcher", "claimer");

  await expect(page.getByRole("heading", { name: "My VM" })).toBeVisible();
  await expect(page.getByTestId("ready-count")).toContainText(/[1-9]\d* ready/);
  await page.getByRole("button", { name: "Claim a GPU VM" }).click();

  await expect(page.getByTestId("vm-name")).toHaveText(/\S+/);
  await expect(page.getByTestId("vm-state")).toHaveText("claimed");
  // The real agent process picks up the assignment on its next poll and acknowledges it.
  await expect(page.getByTestId("vm-agent-ready")).toHaveText("yes", { timeout: 15_000 });
  await expect(page.getByTestId("gpu").first()).toContainText("GPU 0");

  await page.getByRole("button", { name: "Release VM" }).click();
  await page.getByRole("button", { name: "Yes, release it" }).click();
  await expect(page.getByRole("button", { name: "Claim a GPU VM" })).toBeVisible();
  // The VM rejoins the pool only after its agent wiped it and acknowledged the release.
  await expect(page.getByTestId("ready-count")).toContainText(`${FLEET_SIZE} ready`, {
    timeout: 30_000,
  });
});

test("researcher sees a clear message when no VM is free", async ({ signInAs, request }) => {
  await waitForReady(request, FLEET_SIZE);
  for (let i = 0; i < FLEET_SIZE; i++) {
    const holder = await signInAs("researcher", `holder${i}`);
    const claim = await mutate(holder.context.request, "vm.claim");
    expect(claim.error, `${holder.name} should get a VM`).toBeUndefined();
  }

  const { page } = await signInAs("researcher", "latecomer");
  await expect(page.getByTestId("ready-count")).toContainText("0 ready");
  await page.getByRole("button", { name: "Claim a GPU VM" }).click();
  await expect(page.getByTestId("claim-error")).toContainText("No GPU VM is free");
  await expect(page.getByTestId("claim-error")).toHaveAttribute("role", "alert");
  // The holders' VMs are released by the signInAs fixture when the test ends.
});

test("a researcher cannot open the fleet dashboard", async ({ signInAs }) => {
  const { page } = await signInAs("researcher", "curious");
  await page.goto("/admin");
  // Not getByRole("alert") alone: Next's route announcer is an (empty) alert region too.
  await expect(page.getByRole("alert").filter({ hasText: "for LabLink admins" })).toBeVisible();
  await expect(page.getByTestId("vm-table")).toHaveCount(0);
});

test("researcher chooses which fleet to claim from, seeing what is ready in each", async ({
  signInAs,
  request,
}) => {
  await waitForReady(request, 1);
  const admin = await signInAs("admin", "picker-admin");
  const name = uniqueName("pick")
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-");
  const created = await mutate(admin.context.request, "fleet.create", {
    driver: "local",
    name,
    instanceType: "local.big",
    size: 1,
  });
  expect(created.error).toBeUndefined();
  const fleetId = (created.data as { fleetId: string }).fleetId;
  try {
    const { page } = await signInAs("researcher", "picker");
    const choice = page.getByLabel("What to claim");
    await expect(choice).toBeVisible();
    await expect(choice.locator("option").first()).toHaveText(/^Any GPU VM — \d+ ready$/);
    const option = choice.locator("option", { hasText: `${name}: local.big` });
    await expect(option).toHaveText(/— 1 ready$/, { timeout: 30_000 });
    await choice.selectOption({ label: (await option.textContent()) ?? "" });
    await page.getByRole("button", { name: "Claim a GPU VM" }).click();
    await expect(page.getByTestId("vm-name")).toHaveText(new RegExp(`^${name}-`));
    await page.getByRole("button", { name: "Release VM" }).click();
    await page.getByRole("button", { name: "Yes, release it" }).click();
    await expect(page.getByRole("button", { name: "Claim a GPU VM" })).toBeVisible();
  } finally {
    // Gone before later tests count ready VMs (a VM still being wiped may delay the destroy).
    await expect
      .poll(
        () =>
          destroyFleet(admin.context.request, fleetId).then(
            () => "destroyed",
            (e: Error) => e.message,
          ),
        { timeout: 60_000, intervals: [1_000, 2_000] },
      )
      .toBe("destroyed");
  }
});
