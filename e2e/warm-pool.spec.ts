import { createLocalFleet, destroyFleet, fleetName } from "./admin-api";
import { expect, mutate, test } from "./fixtures";

test("admin sees why a warm-pool fleet is not at its size and its next change, and resumes it", async ({
  signInAs,
}) => {
  const { page } = await signInAs("admin", "pool-admin");
  const name = fleetName("pool");
  const fleetId = await createLocalFleet(page.request, { name, size: 0 });
  try {
    const call = async (path: string, input: unknown) => {
      const res = await mutate(page.request, path, input);
      expect(res.error, path).toBeUndefined();
    };
    await call("fleet.setWarmPool", { fleetId, policy: { desiredReady: 1, maxSize: 2 } });
    await call("fleet.pauseWarmPool", { fleetId, reason: "budget review" });
    // A daily slot that starts in two hours (UTC), so now is outside it whatever the time.
    const hhmm = (h: number) => new Date(Date.now() + h * 3_600_000).toISOString().slice(11, 16);
    await call("fleet.addRecurringSchedule", {
      fleetId,
      rrule: "FREQ=DAILY",
      timezone: "UTC",
      startTime: hhmm(2),
      endTime: hhmm(3),
      size: 2,
    });

    await page.goto("/admin/fleets");
    const card = page.getByTestId("fleet-card").filter({ hasText: name });
    await expect(card.getByTestId("fleet-warm-pool")).toContainText("1 ready, at most 2 VMs");
    await expect(card.getByTestId("fleet-pool-reason")).toHaveText("Paused: budget review");
    await expect(card.getByTestId("fleet-next-change")).toContainText("→ 2 ready (recurring slot)");
    await expect(card.getByTestId("fleet-counts")).toHaveText("no VMs");

    await card.getByRole("button", { name: `Resume warm pool of ${name}` }).click();
    await expect(card.getByTestId("fleet-pool-reason")).toHaveCount(0);
    // The worker's warm-pool job (every 15 s) scales the fleet and its agent comes up.
    await expect(card.getByTestId("fleet-counts")).toHaveText("1 ready", { timeout: 60_000 });
    await expect(card.getByRole("button", { name: `Pause warm pool of ${name}` })).toBeVisible();
  } finally {
    await destroyFleet(page.request, fleetId);
  }
});
