import { e2eDatabase, expect, test } from "./fixtures";

const N = 2_000;

test("admin filters, searches and pages a 2,000-VM table", async ({ signInAs }) => {
  const sql = e2eDatabase();
  // A fleet that is being destroyed: its VMs show in the admin table but never join the pool,
  // so the other tests' capacity is untouched even while this one runs.
  const [fleet] = await sql<{ id: string }[]>`
    INSERT INTO fleets (name, driver, instance_type, gpu_model, gpu_count, desired_size, status)
    VALUES ('bulk-2000', 'terraform', 'g5.xlarge', 'NVIDIA A10G', 1, 0, 'destroying') RETURNING id`;
  if (!fleet) throw new Error("no fleet");
  try {
    await sql`
      INSERT INTO vms (fleet_id, name, state, healthy, health_reasons, last_heartbeat_at)
      SELECT ${fleet.id}, 'bulk-' || lpad(i::text, 4, '0'),
        (CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'booting' END)::vm_state,
        i % 10 <> 0,
        CASE WHEN i % 10 = 0 THEN '["agent silent since 2026-11-27 08:00:00 UTC"]'::jsonb ELSE '[]'::jsonb END,
        now()
      FROM generate_series(1, ${N}) i`;

    const { page } = await signInAs("admin", "bulk-admin");
    await page.getByLabel("Fleet", { exact: true }).selectOption({ label: "bulk-2000" });
    await expect(page.getByTestId("vm-total")).toHaveText(`1–50 of ${N}`);
    await expect(page.getByTestId("vm-row")).toHaveCount(50);

    await page.getByLabel("State", { exact: true }).selectOption("failed");
    await expect(page.getByTestId("vm-total")).toHaveText(`1–50 of ${N / 10}`);
    await page.getByRole("button", { name: "Next" }).click();
    await expect(page.getByTestId("vm-total")).toHaveText(`51–100 of ${N / 10}`);
    const failed = page.getByTestId("vm-row").first();
    await failed.getByText(/^unhealthy/).click(); // the reasons are one click away
    await expect(failed).toContainText("agent silent since");

    await page.getByLabel("State", { exact: true }).selectOption("");
    await page.getByLabel("Search", { exact: true }).fill("bulk-1234");
    await expect(page.getByTestId("vm-row")).toHaveCount(1);
    await expect(page.getByTestId("vm-row")).toContainText("bulk-1234");
  } finally {
    await sql`DELETE FROM vms WHERE fleet_id = ${fleet.id}`;
    await sql`DELETE FROM fleets WHERE id = ${fleet.id}`;
    await sql.end();
  }
});
