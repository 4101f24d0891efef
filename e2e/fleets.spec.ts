import { createLocalFleet, destroyFleet, fleetName, query } from "./admin-api";
import { expect, mutate, test, uniqueName } from "./fixtures";

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
  // Reserved for a group, chosen in the form.
  const group = uniqueName("course").toLowerCase();
  expect((await mutate(page.request, "group.create", { name: group })).error).toBeUndefined();
  await page.reload();
  await page.getByLabel("Name", { exact: true }).fill(name);
  await page.getByLabel("VMs", { exact: true }).fill("2");
  await page.getByRole("group", { name: "Who may claim its VMs" }).getByLabel(group).check();
  await page.getByRole("button", { name: "Create fleet" }).click();
  await expect(page.getByTestId("operation-status")).toHaveText("succeeded", { timeout: 60_000 });
  await expect(page.getByTestId("operation-log")).not.toHaveText("Waiting for the worker…");
  const groups = await query<{ name: string; fleets: string[] }[]>(page.request, "group.list");
  expect(groups.find((g) => g.name === group)?.fleets).toEqual([name]);

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

test("admin creates a local fleet and watches it come up with progress, drains and terminates a VM, destroys the fleet", async ({
  signInAs,
}) => {
  const { page } = await signInAs("admin", "lifecycle-admin");
  await page.goto("/admin/fleets");
  const name = fleetName("life");
  await page.getByLabel("Name", { exact: true }).fill(name);
  await page.getByLabel("VMs", { exact: true }).fill("2");
  // The hold limit explains its range when it is out of it.
  await page.getByLabel("Hold limit (hours)").fill("0.1");
  await page.getByRole("button", { name: "Create fleet" }).click();
  await expect(page.getByText("must be at least 15 minutes")).toBeVisible();
  await page.getByLabel("Hold limit (hours)").fill("8");
  await page.getByLabel("Release idle VMs after (minutes)").fill("5");
  await page.getByRole("button", { name: "Create fleet" }).click();
  await expect(page.getByText("must be at least 10 minutes")).toBeVisible();
  await page.getByLabel("Release idle VMs after (minutes)").fill("45");
  await page.getByRole("button", { name: "Create fleet" }).click();

  // Progress: the bar fills as the driver brings VMs up, and the log says what it did.
  const bar = page.getByRole("progressbar", { name: "Resources done" });
  await expect(bar).toHaveAttribute("aria-valuemax", "2", { timeout: 60_000 });
  await expect(bar).toHaveAttribute("aria-valuenow", "2", { timeout: 60_000 });
  await expect(page.getByTestId("operation-status")).toHaveText("succeeded", { timeout: 60_000 });
  const card = page.getByTestId("fleet-card").filter({ hasText: name });
  await expect(card.getByTestId("fleet-hold-limit")).toHaveText("Hold limit: 8 h");
  await expect(card.getByTestId("fleet-counts")).toHaveText("2 ready", { timeout: 30_000 });

  // The hold limit can be changed afterwards, with the same range, and removed.
  await card.getByText("Change hold limit").click();
  const newLimit = card.getByLabel(`New hold limit for ${name} (hours)`);
  await expect(newLimit).toHaveValue("8");
  await newLimit.fill("0.1");
  await card.getByRole("button", { name: "Save hold limit" }).click();
  await expect(card.getByRole("alert")).toHaveText("Hold limit must be at least 15 minutes.");
  await newLimit.fill("2");
  await card.getByRole("button", { name: "Save hold limit" }).click();
  await expect(card.getByTestId("hold-limit-saved")).toHaveText("Saved: hold limit 2 h.");
  await expect(card.getByTestId("fleet-hold-limit")).toHaveText("Hold limit: 2 h");
  await newLimit.fill("");
  await card.getByRole("button", { name: "Save hold limit" }).click();
  await expect(card.getByTestId("fleet-hold-limit")).toHaveText("Hold limit: none");

  // So can the idle limit, in minutes.
  await expect(card.getByTestId("fleet-idle-limit")).toHaveText(
    "Idle release: after 45 min without use",
  );
  await card.getByText("Change idle limit").click();
  const newIdle = card.getByLabel(`New idle limit for ${name} (minutes)`);
  await expect(newIdle).toHaveValue("45");
  await newIdle.fill("90");
  await card.getByRole("button", { name: "Save idle limit" }).click();
  await expect(card.getByTestId("idle-limit-saved")).toHaveText(
    "Saved: idle VMs released after 1.5 h.",
  );
  await expect(card.getByTestId("fleet-idle-limit")).toHaveText(
    "Idle release: after 1.5 h without use",
  );
  await newIdle.fill("");
  await card.getByRole("button", { name: "Save idle limit" }).click();
  await expect(card.getByTestId("fleet-idle-limit")).toHaveText("Idle release: never");

  // One of its VMs, from the dashboard's search.
  await page.goto("/admin");
  await page.getByLabel("Search").fill(name);
  await expect(page.getByTestId("vm-row")).toHaveCount(2);
  await page.getByTestId("vm-row").first().getByRole("link").click();
  await expect(page.getByTestId("detail-state")).toHaveText("ready");

  await page.getByRole("button", { name: "Drain" }).click();
  await page.getByRole("button", { name: "Yes, drain" }).click();
  await expect(page.getByTestId("detail-state")).toHaveText("draining");
  await expect(page.getByTestId("action-outcome")).toContainText("the VM is now draining");

  await page.getByRole("button", { name: "Terminate" }).click();
  await expect(page.getByText("Terminate this VM for good?")).toBeVisible();
  await page.getByRole("button", { name: "Yes, terminate" }).click();
  const outcome = page.getByTestId("action-outcome");
  await expect(outcome).toContainText("Terminate started as operation");
  await expect(outcome.getByRole("link")).toHaveAttribute(
    "href",
    /^\/admin\/operations\/[0-9a-f-]{36}$/,
  );
  await expect(outcome.getByTestId("operation-status")).toHaveText("succeeded", {
    timeout: 60_000,
  });
  await expect(page.getByTestId("detail-state")).toHaveText("terminated", { timeout: 30_000 });
  await expect(page.getByTestId("history")).toContainText("vm.drain");

  await page.goto("/admin/fleets");
  await expect(card.getByTestId("fleet-counts")).toHaveText("1 ready", { timeout: 30_000 });
  await card.getByRole("button", { name: `Destroy ${name}` }).click();
  await page.getByLabel("Fleet name").fill(name);
  await page.getByRole("button", { name: "Destroy fleet" }).click();
  await expect(page.getByTestId("operation-status")).toHaveText("succeeded", { timeout: 60_000 });
  await expect(page.getByTestId("fleet-card").filter({ hasText: name })).toHaveCount(0, {
    timeout: 30_000,
  });
});

test("admin schedules a fleet's size for later; the worker scales it when due, and a pending change can be cancelled", async ({
  signInAs,
}) => {
  const { page } = await signInAs("admin", "scheduler");
  const name = fleetName("sched");
  const fleetId = await createLocalFleet(page.request, { name, size: 1 });
  try {
    await page.goto("/admin/fleets");
    const card = page.getByTestId("fleet-card").filter({ hasText: name });
    await expect(card.getByTestId("fleet-counts")).toHaveText("1 ready", { timeout: 30_000 });
    await card.getByText("Scheduled sizes").click();
    await expect(card.getByText("No scheduled changes.")).toBeVisible();
    // A datetime-local value in the browser's own time zone, `seconds` from now.
    const inSeconds = (seconds: number) =>
      page.evaluate((s) => {
        const d = new Date(Date.now() + s * 1000);
        const p = (n: number) => String(n).padStart(2, "0");
        return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
      }, seconds);
    const size = card.getByLabel(`Scale ${name} to (VMs)`);
    const at = card.getByLabel("At (your time)");

    // The past is refused with a reason.
    await size.fill("2");
    await at.fill(await inSeconds(-3600));
    await card.getByRole("button", { name: "Schedule", exact: true }).click();
    await expect(card.getByRole("alert")).toHaveText("Pick a time in the future.");

    // In a few seconds: pending, then done by the worker (every 15 s), and the fleet grows.
    await at.fill(await inSeconds(3));
    await card.getByRole("button", { name: "Schedule", exact: true }).click();
    const first = card.getByTestId("schedule").first();
    await expect(first).toContainText("→ 2 VMs");
    await expect(first.getByTestId("schedule-status")).toHaveText(/pending|done/);
    await expect(first.getByTestId("schedule-status")).toHaveText("done", { timeout: 40_000 });
    await expect(first.getByRole("link", { name: "operation" })).toHaveAttribute(
      "href",
      /^\/admin\/operations\/[0-9a-f-]{36}$/,
    );
    await expect(card.getByTestId("fleet-counts")).toHaveText("2 ready", { timeout: 45_000 });

    // Tomorrow's change back to 0, cancelled before it is due.
    await size.fill("0");
    await at.fill(await inSeconds(24 * 3600));
    await card.getByRole("button", { name: "Schedule", exact: true }).click();
    await expect(card.getByText("Scheduled sizes (1 pending)")).toBeVisible();
    await card.getByRole("button", { name: /^Cancel the change at / }).click();
    await expect(card.getByText("Scheduled sizes (1 pending)")).toHaveCount(0);
    await expect(
      card.getByTestId("schedule").filter({ hasText: "→ 0 VMs" }).getByTestId("schedule-status"),
    ).toHaveText("cancelled");
  } finally {
    await destroyFleet(page.request, fleetId);
  }
});

test("admin sets a fleet's weekly GPU-hour quota; a researcher sees how much of it they used", async ({
  signInAs,
}) => {
  const admin = await signInAs("admin", "quota-admin");
  const name = fleetName("quota");
  const fleetId = await createLocalFleet(admin.page.request, { name, size: 0 });
  try {
    const { page } = admin;
    await page.goto("/admin/fleets");
    const card = page.getByTestId("fleet-card").filter({ hasText: name });
    await expect(card.getByTestId("fleet-quota")).toHaveText("GPU-hour quota: none");
    await card.getByText("Change GPU-hour quota").click();
    const field = card.getByLabel(
      `New GPU-hour quota for ${name} (GPU-hours per researcher per week)`,
    );
    await field.fill("0");
    await card.getByRole("button", { name: "Save GPU-hour quota" }).click();
    await expect(card.getByRole("alert")).toHaveText("GPU-hour quota must be at least 1 GPU-hour.");
    await field.fill("5");
    await card.getByRole("button", { name: "Save GPU-hour quota" }).click();
    await expect(card.getByTestId("quota-limit-saved")).toHaveText(
      "Saved: 5 GPU-hours per researcher per week.",
    );
    await expect(card.getByTestId("fleet-quota")).toHaveText(
      "GPU-hour quota: 5 per researcher per week",
    );

    const researcher = await signInAs("researcher", "quota-user");
    const pool = researcher.page.getByTestId("pool-fleet").filter({ hasText: name });
    await expect(pool.getByTestId("fleet-quota-used")).toHaveText(
      "Your GPU-hours, last 7 days: 0 of 5",
    );
  } finally {
    await destroyFleet(admin.page.request, fleetId);
  }
});

test("admin creates a fleet whose researchers have root; its card says so", async ({
  signInAs,
}) => {
  const { page } = await signInAs("admin", "root-fleet");
  await page.getByRole("link", { name: "Fleets", exact: true }).click();
  const name = uniqueName("rootlab")
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-");
  await page.getByLabel("Name", { exact: true }).fill(name);
  await page.getByLabel("VMs", { exact: true }).fill("1");
  await page.getByLabel("Root for researchers (sudo and docker)").check();
  await page.getByRole("button", { name: "Create fleet" }).click();
  await expect(page.getByTestId("operation-status")).toHaveText("succeeded", { timeout: 60_000 });
  const card = page.getByTestId("fleet-card").filter({ hasText: name });
  await expect(card).toContainText("root for researchers");
  const fleets = await query<{ name: string; rootForResearchers: boolean }[]>(
    page.request,
    "fleet.list",
  );
  expect(fleets.find((f) => f.name === name)?.rootForResearchers).toBe(true);

  await card.getByRole("button", { name: `Destroy ${name}` }).click();
  await page.getByLabel("Fleet name").fill(name);
  await page.getByRole("button", { name: "Destroy fleet" }).click();
  await expect(page.getByTestId("operation-status")).toHaveText("succeeded", { timeout: 60_000 });
});
