import AxeBuilder from "@axe-core/playwright";
import { expect, FLEET_SIZE, test, waitForReady } from "./fixtures";

// The e2e server samples GPUs every 2 s (LABLINK_GPU_SAMPLE_INTERVAL_S in playwright.config.ts),
// so a local-fleet VM has a history within seconds of coming up.
test("admin sees a local VM's GPU history as charts and as a table, in every range", async ({
  signInAs,
  request,
}) => {
  await waitForReady(request, FLEET_SIZE);
  const { page } = await signInAs("admin", "gpu-charts-admin");
  await page.getByTestId("vm-row").first().getByRole("link").click();

  const charts = page.getByTestId("gpu-charts");
  await expect(charts.getByRole("heading", { name: "GPU history" })).toBeVisible();
  await expect(charts.getByRole("button", { name: "1 hour" })).toHaveAttribute(
    "aria-pressed",
    "true",
  );
  // Three charts (utilisation, memory, temperature), each with a drawn line for GPU 0.
  for (const caption of ["Utilisation (%)", "Memory used (MiB)", "Temperature (°C)"]) {
    const figure = charts.getByRole("figure", { name: caption });
    await expect(figure).toBeVisible();
    // A line through at least two readings. Not toBeVisible(): a flat line (an idle GPU's memory)
    // has a bounding box of height 0, which Playwright counts as hidden.
    await expect(figure.locator("path.recharts-curve").first()).toHaveAttribute(
      "d",
      /^M[\d.]+,[\d.]+L[\d.]+,[\d.]+/,
    );
  }

  // The same figures as a table (the screen-reader alternative).
  await charts.getByText("GPU readings as a table").click();
  const table = charts.getByTestId("gpu-chart-summary");
  await expect(table).toBeVisible();
  await expect(table.getByRole("row", { name: /GPU 0 Utilisation/ })).toContainText("%");
  await expect(table.getByRole("row", { name: /GPU 0 Temperature/ })).toContainText("°C");

  await charts.getByRole("button", { name: "24 hours" }).click();
  await expect(charts.getByRole("button", { name: "24 hours" })).toHaveAttribute(
    "aria-pressed",
    "true",
  );
  await expect(charts.getByRole("figure", { name: "Utilisation (%)" })).toBeVisible();

  const { violations } = await new AxeBuilder({ page })
    .include('[data-testid="gpu-charts"]')
    .analyze();
  const serious = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(
    serious.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
  ).toEqual([]);
});
