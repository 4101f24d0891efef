import path from "node:path";
import { createLocalFleet, destroyFleet, fleetName } from "./admin-api";
import { expect, mutate, test } from "./fixtures";

// Screenshots for docs/screenshots (copied from e2e-artifacts by hand, as screenshots.spec.ts's).
const shotsDir = (testDir: string) => path.resolve(testDir, "..", "e2e-artifacts");

test("researcher extends their hold on My VM, sees the new end and extensions left, and the reason when refused", async ({
  signInAs,
}, testInfo) => {
  const admin = await signInAs("admin", "extend-admin");
  const fleetId = await createLocalFleet(admin.context.request, {
    name: fleetName("extend"),
    size: 1,
    maxHoldMinutes: 60,
  });
  try {
    const rules = await mutate(admin.context.request, "fleet.setHoldExtension", {
      fleetId,
      rules: { stepMinutes: 30, maxExtensions: 3, maxTotalMinutes: 180 },
    });
    expect(rules.error).toBeUndefined();
    const researcher = await signInAs("researcher", "extender");
    expect((await mutate(researcher.context.request, "vm.claim", { fleetId })).error).toBe(
      undefined,
    );
    const { page } = researcher;
    await page.reload();
    await expect(page.getByTestId("vm-state")).toHaveText("claimed");
    await expect(page.getByTestId("time-left")).toContainText("limit 1 h");
    await expect(page.getByTestId("extensions-left")).toHaveText("3 extensions left");

    const before = await page.getByTestId("time-left").textContent();
    await page.getByRole("button", { name: "Extend by 30 min" }).click();
    await expect(page.getByTestId("extend-done")).toContainText(
      "Extended by 30 min: now released at",
    );
    await expect(page.getByTestId("extensions-left")).toHaveText("2 extensions left");
    await expect(page.getByTestId("time-left")).toContainText("extended 1 time");
    // 60 → 90 minutes: the time left grew by about half an hour (1 h 29 min or so).
    await expect(page.getByTestId("time-left")).toContainText(/^1 h (2[89]|30) min/);
    expect(before).toMatch(/^(59|60) min/);
    await page.screenshot({
      path: path.join(shotsDir(testInfo.project.testDir), "extend-desktop.png"),
      fullPage: true,
    });

    // Someone else's claim on the fleet is refused: they are waiting, so no more extensions.
    const waiting = await signInAs("researcher", "extend-waiter");
    const refused = await mutate(waiting.context.request, "vm.claim", { fleetId });
    expect(refused.status).toBe(412);
    expect(refused.error).toMatch(/No GPU VM is free/);
    await page.getByRole("button", { name: "Extend by 30 min" }).click();
    await expect(page.getByTestId("extend-error")).toContainText(
      "Someone is waiting for a VM of fleet",
    );
    await expect(page.getByTestId("extensions-left")).toHaveText("2 extensions left");
    await page.screenshot({
      path: path.join(shotsDir(testInfo.project.testDir), "extend-refused-desktop.png"),
      fullPage: true,
    });
  } finally {
    await destroyFleet(admin.context.request, fleetId);
  }
});

test("admin sets a fleet's hold extension rules on the fleet card", async ({
  signInAs,
}, testInfo) => {
  const admin = await signInAs("admin", "extend-rules");
  const name = fleetName("rules");
  const fleetId = await createLocalFleet(admin.context.request, {
    name,
    size: 1,
    maxHoldMinutes: 120,
  });
  try {
    const { page } = admin;
    await page.goto("/admin/fleets");
    const card = page.getByTestId("fleet-card").filter({ hasText: name });
    await expect(card.getByTestId("fleet-hold-extension")).toHaveText("Hold extensions: none");
    await card.getByText("Change hold extensions").click();
    await card.getByLabel("Minutes per extension").fill("30");
    await card.getByLabel("Extensions per hold").fill("2");
    // Too short: the hold limit alone is 2 h. The reason is shown, nothing is saved.
    await card.getByLabel("Longest hold in all (hours)").fill("2");
    await card.getByRole("button", { name: "Save hold extensions" }).click();
    await expect(card.getByRole("alert")).toContainText("at least 150 minutes");
    await card.getByLabel("Longest hold in all (hours)").fill("3");
    await card.getByRole("button", { name: "Save hold extensions" }).click();
    await expect(card.getByTestId("hold-extension-saved")).toContainText("2 × 30 min");
    await expect(card.getByTestId("fleet-hold-extension")).toHaveText(
      "Hold extensions: 2 × 30 min, at most 3 h in all",
    );
    await card.screenshot({
      path: path.join(shotsDir(testInfo.project.testDir), "extend-fleet-card-desktop.png"),
    });
    const audit = await mutate(admin.context.request, "fleet.setHoldExtension", {
      fleetId,
      rules: null,
    });
    expect(audit.error).toBeUndefined();
    await expect(card.getByTestId("fleet-hold-extension")).toHaveText("Hold extensions: none");
  } finally {
    await destroyFleet(admin.context.request, fleetId);
  }
});
