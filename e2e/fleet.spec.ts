import { expect, FLEET_SIZE, poolTotals, test } from "./fixtures";

// Runs before every other spec (its own Playwright project), right after the server answers
// /api/health: the 30 s budget is measured from the server being up.
test("the local fleet's four agents register and become ready", async ({ request }) => {
  await expect
    .poll(async () => (await poolTotals(request)).ready, {
      message: "all local agents registered and reported ready",
      timeout: 30_000,
      intervals: [250, 500, 1_000],
    })
    .toBe(FLEET_SIZE);
  const totals = await poolTotals(request);
  expect(totals).toMatchObject({ total: FLEET_SIZE, unhealthy: 0, inUse: 0 });
});
