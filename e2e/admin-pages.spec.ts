import type { APIRequestContext } from "@playwright/test";
import { e2eDatabase, expect, mutate, test, uniqueName } from "./fixtures";

const fleetName = (prefix: string) =>
  uniqueName(prefix)
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-");

/** Dev sign-in's address for a name (server/auth/dev-login.ts). */
const devEmail = (name: string) =>
  `${name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "")}@dev.lablink.local`;

/** A local fleet of no VMs (so the shared pool is untouched), created through the API. */
async function emptyLocalFleet(request: APIRequestContext, name: string) {
  const res = await mutate(request, "fleet.create", {
    name,
    driver: "local",
    instanceType: "local.sim",
    size: 0,
  });
  expect(res.error).toBeUndefined();
  return res.data as { fleetId: string; operation: { id: string } };
}

async function query<T>(request: APIRequestContext, p: string, input: unknown): Promise<T> {
  const res = await request.get(
    `/api/trpc/${p}?input=${encodeURIComponent(JSON.stringify({ json: input }))}`,
  );
  expect(res.ok(), `${p} answered ${res.status()}`).toBe(true);
  return ((await res.json()) as { result: { data: { json: T } } }).result.data.json;
}

test("admin finds a fleet's create operation in the operations list and opens its log", async ({
  signInAs,
}) => {
  const { page, context, name: adminName } = await signInAs("admin", "ops-admin");
  const name = fleetName("ops");
  const { fleetId, operation } = await emptyLocalFleet(context.request, name);
  try {
    await page
      .getByRole("navigation", { name: "Admin" })
      .getByRole("link", { name: "Operations" })
      .click();
    await expect(page.getByRole("heading", { name: "Operations" })).toBeVisible();
    await expect(
      page.getByRole("navigation", { name: "Admin" }).getByRole("link", { name: "Operations" }),
    ).toHaveAttribute("aria-current", "page");
    await page.getByLabel("Fleet", { exact: true }).selectOption({ label: name });
    await page.getByLabel("Kind", { exact: true }).selectOption("fleet.create");
    await expect(page).toHaveURL(new RegExp(`fleet=${fleetId}.*kind=fleet.create`));
    const rows = page.getByTestId("operation-row");
    await expect(rows).toHaveCount(1);
    await expect(rows.first()).toContainText(name);
    await rows.first().getByRole("link", { name: "fleet.create" }).click();

    await expect(page).toHaveURL(new RegExp(`/admin/operations/${operation.id}$`));
    await expect(page.getByRole("heading", { name: /fleet\.create/ })).toBeVisible();
    await expect(page.getByTestId("operation-status")).toHaveText("succeeded", { timeout: 60_000 });
    await expect(page.getByTestId("detail-status")).toHaveText("succeeded");
    await expect(page.getByText(devEmail(adminName))).toBeVisible();
    // Finished operations cannot be cancelled.
    await expect(page.getByRole("button", { name: "Cancel operation" })).toHaveCount(0);

    // A filter nobody matches says so instead of showing an empty table.
    await page.goto(`/admin/operations?fleet=${fleetId}&status=running`);
    await expect(page.getByText("No operations match these filters.")).toBeVisible();
  } finally {
    await mutate(context.request, "fleet.destroy", { fleetId });
  }
});

test("admin filters the audit log by action, shares the view by URL and follows a link", async ({
  signInAs,
}) => {
  const { page, context, name: adminName } = await signInAs("admin", "audit-admin");
  const name = fleetName("audit");
  const { fleetId, operation } = await emptyLocalFleet(context.request, name);
  try {
    await page
      .getByRole("navigation", { name: "Admin" })
      .getByRole("link", { name: "Audit" })
      .click();
    await expect(page.getByRole("heading", { name: "Audit log" })).toBeVisible();
    await page.getByLabel("Action").fill("operation.fleet.*");
    await page.getByLabel("Actor (email or id)").fill(devEmail(adminName));
    await page.getByRole("button", { name: "Apply filters" }).click();
    await expect(page).toHaveURL(/action=operation\.fleet\.\*/);
    const rows = page.getByTestId("audit-row");
    await expect(rows).toHaveCount(1);
    await expect(rows.first()).toContainText("operation.fleet.create");
    await expect(rows.first()).toContainText(devEmail(adminName));
    await expect(rows.first()).toContainText(fleetId);

    // The same URL in a fresh page shows the same filtered view.
    const shared = page.url();
    await page.goto("/admin");
    await page.goto(shared);
    await expect(page.getByLabel("Action")).toHaveValue("operation.fleet.*");
    await expect(page.getByTestId("audit-row")).toHaveCount(1);

    await page
      .getByTestId("audit-row")
      .first()
      .getByRole("link", { name: "View operation" })
      .click();
    await expect(page).toHaveURL(new RegExp(`/admin/operations/${operation.id}$`));
    await expect(page.getByRole("heading", { name: /fleet\.create/ })).toBeVisible();

    // A malformed filter is explained, not a crash.
    await page.goto("/admin/audit?action=vm.%25");
    await expect(
      page.getByRole("alert").filter({ hasText: "An action like vm.drain" }),
    ).toBeVisible();
  } finally {
    await mutate(context.request, "fleet.destroy", { fleetId });
  }
});

test("admin pages through a long audit log, older and back to newer", async ({ signInAs }) => {
  const sql = e2eDatabase();
  const action = `e2e.pager.${uniqueName("p").replaceAll("-", "")}`;
  // 60 events: one page of 50 and a second of 10, newest first.
  await sql`
    INSERT INTO audit_events (actor_kind, action, target_kind, target_id, at)
    SELECT 'system', ${action}, 'vm', 'pager-' || i, now() - make_interval(secs => i)
    FROM generate_series(1, 60) AS i`;
  try {
    const { page } = await signInAs("admin", "pager-admin");
    await page.goto(`/admin/audit?action=${action}`);
    const rows = page.getByTestId("audit-row");
    await expect(rows).toHaveCount(50);
    await expect(rows.first()).toContainText("pager-1");
    await expect(page.getByRole("button", { name: "Newer" })).toBeDisabled();
    await page.getByRole("button", { name: "Older" }).click();
    await expect(rows).toHaveCount(10);
    await expect(rows.first()).toContainText("pager-51");
    await expect(page.getByRole("button", { name: "Older" })).toBeDisabled();
    await page.getByRole("button", { name: "Newer" }).click();
    await expect(rows).toHaveCount(50);
    await expect(rows.first()).toContainText("pager-1");
  } finally {
    await sql`DELETE FROM audit_events WHERE action = ${action}`;
  }
});

type UserRow = { id: string; email: string | null; role: "admin" | "researcher" };

test("admin promotes and demotes a user, and cannot demote the last admin", async ({
  signInAs,
}) => {
  const researcher = await signInAs("researcher", "promote-me");
  const { page, context, name: adminName } = await signInAs("admin", "roles-admin");
  const email = devEmail(researcher.name);

  await page
    .getByRole("navigation", { name: "Admin" })
    .getByRole("link", { name: "Users" })
    .click();
  await page.getByLabel("Search by name or email").fill(researcher.name);
  const row = page.getByTestId("user-row").filter({ hasText: email });
  await expect(row).toHaveCount(1);
  await expect(row.getByTestId("user-role")).toHaveText("researcher");
  await row.getByRole("button", { name: `Make ${email} an admin` }).click();
  await row.getByRole("button", { name: "Promote" }).click();
  await expect(row.getByTestId("user-role")).toHaveText("admin");
  await row.getByRole("button", { name: `Make ${email} a researcher` }).click();
  await row.getByRole("button", { name: "Demote" }).click();
  await expect(row.getByTestId("user-role")).toHaveText("researcher");

  // Make this admin the only one for a moment (earlier tests' admins are demoted, then restored).
  const all = await query<{ rows: UserRow[] }>(context.request, "user.list", { limit: 500 });
  const me = devEmail(adminName);
  const others = all.rows.filter((u) => u.role === "admin" && u.email !== me);
  try {
    for (const u of others) {
      expect(
        (await mutate(context.request, "user.setRole", { userId: u.id, role: "researcher" })).error,
      ).toBeUndefined();
    }
    await page.getByLabel("Search by name or email").fill(adminName);
    const mine = page.getByTestId("user-row").filter({ hasText: me });
    await mine.getByRole("button", { name: `Make ${me} a researcher` }).click();
    await mine.getByRole("button", { name: "Demote" }).click();
    await expect(mine.getByRole("alert")).toHaveText(
      "This is the last admin. Promote someone else before demoting this account.",
    );
    await expect(mine.getByTestId("user-role")).toHaveText("admin");
  } finally {
    for (const u of others)
      await mutate(context.request, "user.setRole", { userId: u.id, role: "admin" });
  }
});

test("admin creates a group, adds and removes a member, and deletes the group", async ({
  signInAs,
}) => {
  const member = await signInAs("researcher", "grouped");
  const { page } = await signInAs("admin", "groups-admin");
  const group = uniqueName("lab");
  const email = devEmail(member.name);

  await page
    .getByRole("navigation", { name: "Admin" })
    .getByRole("link", { name: "Groups" })
    .click();
  await page.getByLabel("Group name").fill(group);
  await page.getByLabel("Description (optional)").fill("e2e group");
  await page.getByRole("button", { name: "Create group" }).click();
  const card = page.getByTestId("group-card").filter({ hasText: group });
  await expect(card).toContainText("0 members");

  // A duplicate name is refused with the server's message.
  await page.getByLabel("Group name").fill(group);
  await page.getByRole("button", { name: "Create group" }).click();
  await expect(
    page.getByRole("alert").filter({ hasText: `A group named "${group}" already exists.` }),
  ).toBeVisible();

  await expect(page.getByRole("heading", { name: group, level: 2 })).toBeVisible();
  await page.getByLabel("Member's email").fill("nobody-here@example.edu");
  await page.getByRole("button", { name: "Add member" }).click();
  await expect(
    page.getByRole("alert").filter({ hasText: "must sign in once first" }),
  ).toBeVisible();
  await page.getByLabel("Member's email").fill(email);
  await page.getByRole("button", { name: "Add member" }).click();
  await expect(page.getByTestId("member-row").filter({ hasText: email })).toBeVisible();
  await expect(card).toContainText("1 member");

  await page.getByRole("button", { name: `Remove ${email}` }).click();
  await expect(page.getByTestId("member-row")).toHaveCount(0);
  await expect(page.getByText("No members yet.")).toBeVisible();

  await card.getByRole("button", { name: `Delete ${group}` }).click();
  await card.getByRole("button", { name: "Delete group" }).click();
  await expect(page.getByTestId("group-card").filter({ hasText: group })).toHaveCount(0);
});

test("admin creates an enrollment token, sees it once with the command, and revokes it", async ({
  signInAs,
}) => {
  const sql = e2eDatabase();
  const name = fleetName("byo");
  const [fleet] = await sql<{ id: string }[]>`
    INSERT INTO fleets (name, driver, instance_type, gpu_model, gpu_count, desired_size, status)
    VALUES (${name}, 'byo', 'workstation', 'NVIDIA RTX 4090', 1, 0, 'active') RETURNING id`;
  if (!fleet) throw new Error("no fleet");
  try {
    const { page } = await signInAs("admin", "enroll-admin");
    await page
      .getByRole("navigation", { name: "Admin" })
      .getByRole("link", { name: "Enrollment" })
      .click();
    // Wait for the page: until it has replaced the dashboard, "Fleet" is the dashboard's filter.
    await expect(page.getByRole("heading", { name: "Enrollment tokens" })).toBeVisible();
    const form = page.getByRole("form", { name: "New token" });
    await expect(form.getByRole("option", { name })).toBeAttached();
    await form.getByLabel("Fleet", { exact: true }).selectOption({ label: name });
    await page.getByLabel("Machines it may enroll").fill("3");
    const label = uniqueName("room");
    await page.getByLabel("Label (optional)").fill(label);
    await page.getByRole("button", { name: "Create token" }).click();

    const token = (await page.getByTestId("new-token").textContent())?.trim() ?? "";
    expect(token).toMatch(/^lle_[0-9a-f]{32}_[A-Za-z0-9_-]{43}$/);
    await expect(page.getByTestId("enroll-command")).toContainText(`--enroll ${token}`);
    await expect(page.getByRole("button", { name: "Copy token" })).toBeVisible();

    const row = page.getByTestId("token-row").filter({ hasText: label });
    await expect(row.getByTestId("token-status")).toHaveText("usable");
    await expect(row).toContainText("0 / 3");

    // Shown once: after hiding it (or reloading), the token is nowhere on the page.
    await page.getByRole("button", { name: "Done, hide it" }).click();
    await page.reload();
    await expect(page.getByTestId("token-row").filter({ hasText: label })).toBeVisible();
    expect(await page.content()).not.toContain(token);

    await row.getByRole("button", { name: `Revoke ${label}` }).click();
    await row.getByRole("button", { name: "Revoke token" }).click();
    await expect(row.getByTestId("token-status")).toHaveText("revoked");
  } finally {
    await sql`DELETE FROM enrollment_tokens WHERE fleet_id = ${fleet.id}`;
    await sql`DELETE FROM fleets WHERE id = ${fleet.id}`;
    await sql.end();
  }
});
