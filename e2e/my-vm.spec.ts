import type { PoolSummary } from "../server/domain/pool";
import { createLocalFleet, destroyFleet, fleetName, query } from "./admin-api";
import { e2eDatabase, expect, FLEET_SIZE, mutate, test, waitForReady } from "./fixtures";

test("researcher sees the ssh command, time held and time left on My VM, and a warning near the limit", async ({
  signInAs,
}) => {
  const admin = await signInAs("admin", "hold-admin");
  // The shortest limit an admin may set: a fresh claim already has under 15 minutes left.
  const fleetId = await createLocalFleet(admin.context.request, {
    name: fleetName("held"),
    size: 1,
    maxHoldMinutes: 15,
  });
  try {
    const researcher = await signInAs("researcher", "holder");
    const claim = await mutate(researcher.context.request, "vm.claim", { fleetId });
    expect(claim.error).toBeUndefined();
    const { page, context } = researcher;
    await page.reload();

    await expect(page.getByTestId("vm-state")).toHaveText("claimed");
    // A local VM's address is its host name; the login is the documented default.
    await expect(page.getByTestId("ssh-command")).toHaveText(/^ssh ubuntu@[A-Za-z0-9.:-]+$/);
    await context.grantPermissions(["clipboard-read", "clipboard-write"]);
    await page.getByRole("button", { name: "Copy" }).click();
    await expect(page.getByText("Copied.")).toBeVisible();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(
      await page.getByTestId("ssh-command").textContent(),
    );

    await expect(page.getByTestId("time-held")).toHaveText(/^(under a minute|\d+ min)$/);
    await expect(page.getByTestId("time-left")).toContainText(/1[45] min/);
    await expect(page.getByTestId("time-left")).toContainText("limit 15 min");
    await expect(page.getByTestId("hold-warning")).toContainText("This VM will be released in");

    await page.getByRole("button", { name: "Release VM" }).click();
    await page.getByRole("button", { name: "Yes, release it" }).click();
    await expect(page.getByRole("button", { name: "Claim a GPU VM" })).toBeVisible();
  } finally {
    await destroyFleet(admin.context.request, fleetId);
  }
});

test("a researcher whose VM an admin released is told so on My VM", async ({ signInAs }) => {
  const admin = await signInAs("admin", "taker-back");
  const fleetId = await createLocalFleet(admin.context.request, {
    name: fleetName("taken"),
    size: 1,
  });
  try {
    const researcher = await signInAs("researcher", "taken-from");
    const claim = await mutate(researcher.context.request, "vm.claim", { fleetId });
    expect(claim.error).toBeUndefined();
    const { vmId } = claim.data as { vmId: string };
    const { page } = researcher;
    await page.reload();
    await expect(page.getByTestId("vm-state")).toHaveText("claimed");
    expect(
      (await mutate(admin.context.request, "vm.forceRelease", { vmId })).error,
    ).toBeUndefined();
    // My VM polls: the page turns to the claim button, with the reason.
    await expect(page.getByTestId("ended-notice")).toContainText("An admin released");
    await expect(page.getByRole("button", { name: "Claim a GPU VM" })).toBeVisible();
  } finally {
    await destroyFleet(admin.context.request, fleetId);
  }
});

test("researcher sees why no VM can be claimed and when capacity is expected", async ({
  signInAs,
  request,
}) => {
  await waitForReady(request, FLEET_SIZE);
  for (let i = 0; i < FLEET_SIZE - 1; i++) {
    const holder = await signInAs("researcher", `taker${i}`);
    expect((await mutate(holder.context.request, "vm.claim")).error).toBeUndefined();
  }
  const waiting = await signInAs("researcher", "waiting");
  const { page } = waiting;

  // The last free VM reboots: capacity on its way, due in the fleet's usual boot time (the
  // median of its VMs' boots so far).
  const admin = await signInAs("admin", "rebooter");
  const free = await query<{ rows: { id: string }[] }>(admin.context.request, "vm.list", {
    states: ["ready"],
    limit: 1,
  });
  const vmId = free.rows[0]?.id;
  expect(vmId).toBeTruthy();
  expect((await mutate(admin.context.request, "vm.reboot", { vmId })).error).toBeUndefined();
  // A local VM is back within seconds, faster than the page polls: catch the server's answer
  // while it reboots, then show the page exactly that answer.
  let rebooting: unknown = null;
  await expect
    .poll(
      async () => {
        const res = await waiting.context.request.get("/api/trpc/pool.summary");
        const body = await res.json();
        const pool = body.result.data.json as PoolSummary;
        if (pool.totals.ready === 0 && pool.fleets.some((f) => f.outlook.kind === "booting"))
          rebooting = body;
        return rebooting !== null;
      },
      { timeout: 30_000, intervals: [100] },
    )
    .toBe(true);
  // The page batches its queries (/api/trpc/vm.mine,pool.summary?batch=1): answer pool.summary's
  // part with the caught answer and let the server answer the rest.
  await page.route("**/api/trpc/**", async (route) => {
    const url = new URL(route.request().url());
    const procedures = decodeURIComponent(url.pathname.replace(/^.*\/api\/trpc\//, "")).split(",");
    const at = procedures.indexOf("pool.summary");
    if (at < 0) return route.continue();
    if (!url.searchParams.has("batch")) return route.fulfill({ json: rebooting });
    const response = await route.fetch();
    const parts = (await response.json()) as unknown[];
    parts[at] = rebooting;
    return route.fulfill({ status: response.status(), json: parts });
  });
  await page.reload();
  await expect(page.getByTestId("pool-message")).toContainText(
    /No VM is free right now\. 1 VM is starting up, usually ready in about \d+ min/,
  );
  await expect(page.getByTestId("fleet-outlook").first()).toContainText("1 VM is starting up");
  await page.unroute("**/api/trpc/**");

  // Why, live: once it is back and taken too, every VM is held and nothing is starting.
  await waitForReady(request, 1);
  const last = await signInAs("researcher", "last-taker");
  expect((await mutate(last.context.request, "vm.claim")).error).toBeUndefined();
  await page.reload();
  await expect(page.getByTestId("pool-message")).toContainText("every VM is in use");
  await expect(page.getByTestId("fleet-outlook").first()).toContainText("Every VM is in use");
});

test("researcher is warned that an idle VM will be released, and told why once it is", async ({
  signInAs,
}) => {
  const researcher = await signInAs("researcher", "idler");
  const sql = e2eDatabase();
  // A bring-your-own fleet (no driver restarts or reconciles its VMs) with a 30-minute idle limit,
  // and a VM this researcher has held for an hour whose agent reports it idle for 20 minutes.
  // The simulated local agents always report a held VM as in use, so the report is written here.
  const [user] = await sql<{ id: string }[]>`SELECT id FROM users WHERE name = ${researcher.name}`;
  const [fleet] = await sql<{ id: string }[]>`
    INSERT INTO fleets (name, driver, instance_type, gpu_model, gpu_count, status, idle_release_minutes)
    VALUES (${fleetName("idle")}, 'byo', 'workstation', 'NVIDIA A10G', 1, 'active', 30)
    RETURNING id`;
  if (!user || !fleet) throw new Error("setup");
  const [vm] = await sql<{ id: string; name: string }[]>`
    INSERT INTO vms (fleet_id, name, state, healthy, boot_id, holder_id, claimed_at, assignment_id,
                     in_use, idle_since, last_heartbeat_at)
    VALUES (${fleet.id}, ${`${fleetName("idle")}-1`}, 'claimed', true, 'boot-1', ${user.id},
            now() - interval '60 minutes', gen_random_uuid(), false,
            now() - interval '20 minutes', now())
    RETURNING id, name`;
  if (!vm) throw new Error("setup");
  // Stands in for the agent's heartbeats, so the silent-VM sweep (30 s here) leaves the VM be.
  const beat = setInterval(() => {
    void sql`UPDATE vms SET last_heartbeat_at = now() WHERE id = ${vm.id}`.catch(() => undefined);
  }, 5_000);
  try {
    const { page } = researcher;
    await page.reload();
    await expect(page.getByTestId("vm-name")).toHaveText(vm.name);
    await expect(page.getByTestId("idle-release")).toContainText(
      /^idle since \d{1,2}:\d\d( [AP]M)?; released at \d{1,2}:\d\d( [AP]M)? unless you use it$/,
    );
    await expect(page.getByTestId("idle-warning")).toContainText(
      /it will be released in (9|10) min unless you connect or run something/,
    );
    // Admins find such VMs on the dashboard: held, but idle.
    const admin = await signInAs("admin", "idle-finder");
    await admin.page.getByLabel("Holder").selectOption({ label: "held, but idle" });
    const row = admin.page.getByTestId("vm-row").filter({ hasText: vm.name });
    await expect(row.getByTestId("vm-row-idle")).toHaveText("(idle 20m)");
    await admin.page.getByLabel("Holder").selectOption({ label: "no holder" });
    await expect(row).toHaveCount(0);

    // "I'm still using it" restarts the count: 30 minutes from now.
    await page.getByRole("button", { name: "I'm still using it" }).click();
    await expect(page.getByTestId("idle-warning")).toContainText(/released in (29|30) min/);
    const [kept] = await sql<{ idle_kept_at: Date | null }[]>`
      SELECT idle_kept_at FROM vms WHERE id = ${vm.id}`;
    expect(kept?.idle_kept_at).toBeInstanceOf(Date);

    // Still idle 31 minutes on: the hold sweep (every 30 s) releases it, and My VM says why.
    await sql`UPDATE vms SET idle_since = now() - interval '61 minutes',
      idle_kept_at = now() - interval '31 minutes' WHERE id = ${vm.id}`;
    await expect(page.getByTestId("ended-notice")).toContainText(`${vm.name} was released at`, {
      timeout: 60_000,
    });
    await expect(page.getByTestId("ended-notice")).toContainText(
      "nothing had used it for the fleet's idle limit of 30 min",
    );
    await expect(page.getByRole("button", { name: "Claim a GPU VM" })).toBeVisible();
  } finally {
    clearInterval(beat);
    await sql`DELETE FROM vms WHERE id = ${vm.id}`;
    await sql`DELETE FROM fleets WHERE id = ${fleet.id}`;
    await sql.end();
  }
});
