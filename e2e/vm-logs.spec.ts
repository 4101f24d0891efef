import AxeBuilder from "@axe-core/playwright";
import type { Page } from "@playwright/test";
import { expect, test, waitForReady } from "./fixtures";

async function seriousViolations(page: Page) {
  const { violations } = await new AxeBuilder({ page })
    .include('section[aria-labelledby="boot-timings-heading"]')
    .include('section[aria-labelledby="logs-heading"]')
    .analyze();
  return violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}

test("admin opens a local VM and sees its boot timings and log lines arrive live", async ({
  signInAs,
  request,
}) => {
  await waitForReady(request, 1);
  const { page } = await signInAs("admin", "logs-admin");
  // A ready VM, so draining it (to make its agent log something new) takes it from no one.
  const row = page.getByTestId("vm-row").filter({ hasText: "ready" }).first();
  await row.getByRole("link").click();
  await expect(page.getByTestId("history")).toBeVisible();

  // Boot timings: the simulated boot's cloud-init run and container start, after the boot.
  const timings = page.getByTestId("boot-timings");
  await expect(timings).toBeVisible();
  const cloudInit = timings.getByRole("listitem").filter({ hasText: "cloud-init finished" });
  await expect(cloudInit.locator("time")).toHaveText(/^\+\d/);
  const container = timings.getByRole("listitem").filter({ hasText: "Research container ready" });
  await expect(container.locator("time")).toHaveText(/^\+\d/);
  await expect(
    timings.getByRole("listitem").filter({ hasText: "Agent registered" }).locator("time"),
  ).toHaveText(/^\+\d/);

  // Log lines from all three sources.
  const log = page.getByRole("log", { name: "VM log lines" });
  await expect(log).toContainText("cloud-init");
  await expect(log).toContainText(/Cloud-init v\. \S+ finished/);
  await expect(log).toContainText("research container: ready");
  await expect(log).toContainText("registered");

  // Live: drain the VM; its agent logs the new state and the line shows up without a reload.
  // (Counted: another test may have drained this shared VM before.)
  const drainLines = log.getByRole("listitem").filter({ hasText: '"state":"draining"' });
  const before = await drainLines.count();
  await page.getByRole("button", { name: "Drain", exact: true }).click();
  await page.getByRole("button", { name: "Yes, drain" }).click();
  await expect(page.getByTestId("detail-state")).toHaveText("draining");
  await expect(drainLines).toHaveCount(before + 1, { timeout: 20_000 });

  // Filter by source, keyboard only.
  const sourceSelect = page.getByLabel("Source");
  await sourceSelect.focus();
  await sourceSelect.selectOption("cloud-init");
  await expect(log).toContainText("Cloud-init");
  await expect(log.getByRole("listitem").filter({ hasText: /^\S+\s*agent/ })).toHaveCount(0);
  await sourceSelect.selectOption("");

  // Pause and resume.
  await page.getByRole("button", { name: "Pause live tail" }).press("Enter");
  await expect(page.getByTestId("logs-status")).toContainText("Paused");
  await page.getByRole("button", { name: "Resume live tail" }).click();
  await expect(page.getByTestId("logs-status")).toContainText("Live");
  await expect(log).toContainText('"state":"draining"');

  expect(await seriousViolations(page), "light").toEqual([]);
  await page.emulateMedia({ colorScheme: "dark" });
  expect(await seriousViolations(page), "dark").toEqual([]);

  // Put the VM back for the other tests.
  await page.getByRole("button", { name: "Undrain" }).click();
  await page.getByRole("button", { name: "Yes, undrain" }).click();
  await expect(page.getByTestId("detail-state")).toHaveText("ready");
});
