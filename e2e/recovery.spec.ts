import { writeFileSync } from "node:fs";
import path from "node:path";
import { createLocalFleet, destroyFleet, fleetName, query } from "./admin-api";
import { expect, test } from "./fixtures";

test("admin sets a fleet's recovery policy and sees a VM with a failing GPU rebooted back to health, with its history", async ({
  signInAs,
}) => {
  test.setTimeout(180_000);
  const { page } = await signInAs("admin", "recovery-admin");
  const name = fleetName("heal");
  const fleetId = await createLocalFleet(page.request, { name, size: 1 });

  await page.goto("/admin/fleets");
  const card = page.getByTestId("fleet-card").filter({ hasText: name });
  await expect(card.getByTestId("fleet-recovery")).toContainText(
    "on: silent > 3 min, booting > 25 min, rebooting > 10 min",
  );
  await card.getByText("Change automatic recovery").click();
  await card.getByLabel("Unhealthy for (min)").fill("0");
  await card.getByLabel("Cooldown between attempts (min)").fill("0");
  await card.getByRole("button", { name: "Save recovery policy" }).click();
  await expect(card.getByTestId("recovery-policy-saved")).toContainText("unhealthy > 0 min");
  // A value out of range is explained next to the form, and nothing changes.
  await card.getByLabel("Warm reboots").fill("11");
  await card.getByRole("button", { name: "Save recovery policy" }).click();
  await expect(card.getByRole("alert")).toContainText("at most 10");

  // The simulated VM's GPU fails (cured by a reboot: see docs/operations.md).
  const [vm] = (
    await query<{ rows: { id: string; name: string }[] }>(page.request, "vm.list", {
      fleetId,
      limit: 10,
    })
  ).rows;
  if (!vm) throw new Error("no VM");
  writeFileSync(
    path.resolve(".data/e2e/local-fleet", vm.name, "gpu-fault"),
    "GPU 0 has fallen off the bus\n",
  );

  // The worker looks every 30 s: a warm reboot by the agent, then the VM is healthy again.
  await page.goto(`/admin/vms/${vm.id}`);
  const history = page.getByTestId("history");
  await expect(history).toContainText("recovery.warm_reboot", { timeout: 90_000 });
  await expect(history).toContainText("recovery.recovered", { timeout: 60_000 });
  await expect(page.getByTestId("detail-state")).toContainText("ready");

  await destroyFleet(page.request, fleetId);
});
