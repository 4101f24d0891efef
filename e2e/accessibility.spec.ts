import AxeBuilder from "@axe-core/playwright";
import type { Page } from "@playwright/test";
import { expect, mutate, test, waitForReady } from "./fixtures";

/** Fails on serious or critical axe violations, listing each rule and the elements it flagged. */
async function expectNoSeriousViolations(page: Page, label: string) {
  const { violations } = await new AxeBuilder({ page }).analyze();
  const serious = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  // Lesser findings are worth seeing but do not fail the test.
  for (const v of violations.filter((x) => !serious.includes(x))) {
    console.log(
      `${label}: [${v.impact}] ${v.id} on ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`,
    );
  }
  const report = serious.map(
    (v) =>
      `${label}: [${v.impact}] ${v.id}: ${v.help}\n${v.nodes
        .map(
          (n) => `    ${n.target.join(" ")}\n      ${n.failureSummary?.replace(/\n/g, "\n      ")}`,
        )
        .join("\n")}`,
  );
  if (report.length) console.log(report.join("\n"));
  expect(report, `serious or critical accessibility violations on ${label}`).toEqual([]);
}

test("the home page has no serious accessibility problems", async ({ page }) => {
  await page.goto("/");
  await expect(page.getByTestId("ready-count")).toBeVisible();
  await expectNoSeriousViolations(page, "/ (signed out)");
});

test("the sign-in page has no serious accessibility problems", async ({ page }) => {
  await page.goto("/signin");
  await expect(page.getByLabel("Your name")).toBeVisible();
  await expectNoSeriousViolations(page, "/signin");
});

test("a researcher's page holding a VM has no serious accessibility problems", async ({
  signInAs,
  request,
}) => {
  await waitForReady(request, 1);
  const { page, context } = await signInAs("researcher", "a11y");
  expect((await mutate(context.request, "vm.claim")).error).toBeUndefined();
  await page.reload();
  await expect(page.getByTestId("vm-agent-ready")).toHaveText("yes", { timeout: 15_000 });
  await expect(page.getByTestId("gpu").first()).toBeVisible();
  await expect(page.getByTestId("ready-count")).toBeVisible();
  await expectNoSeriousViolations(page, "/ (researcher holding a VM)");
});

test("the fleet dashboard has no serious accessibility problems", async ({ signInAs }) => {
  const { page } = await signInAs("admin", "a11y-admin");
  await expect(page.getByTestId("vm-row").first()).toBeVisible();
  await expectNoSeriousViolations(page, "/admin");
});

test("the VM detail page has no serious accessibility problems", async ({ signInAs }) => {
  const { page } = await signInAs("admin", "a11y-detail");
  await page.getByTestId("vm-row").first().getByRole("link").click();
  await expect(page.getByTestId("history")).toBeVisible();
  await page.getByRole("button", { name: "Mark failed" }).click();
  await expect(page.getByLabel(/Reason/)).toBeVisible();
  await expectNoSeriousViolations(page, "/admin/vms/[id] (confirming an action)");
  await page.getByRole("button", { name: "Cancel" }).click();
});

test("the profile page has no serious accessibility problems", async ({ signInAs }) => {
  const { page } = await signInAs("researcher", "a11y-profile");
  await page.goto("/profile");
  await expect(page.getByRole("heading", { name: "SSH keys" })).toBeVisible();
  await expectNoSeriousViolations(page, "/profile");
});

test("the fleets page has no serious accessibility problems", async ({ signInAs }) => {
  const { page } = await signInAs("admin", "a11y-fleets");
  await page.goto("/admin/fleets");
  await expect(page.getByTestId("fleet-card").first()).toBeVisible();
  await expectNoSeriousViolations(page, "/admin/fleets");
});

test("a researcher's page in the dark theme has no serious accessibility problems", async ({
  signInAs,
  request,
}) => {
  await waitForReady(request, 1);
  const { page, context } = await signInAs("researcher", "a11y-dark");
  expect((await mutate(context.request, "vm.claim")).error).toBeUndefined();
  await page.emulateMedia({ colorScheme: "dark" });
  await page.reload();
  await expect(page.getByTestId("ssh-command")).toBeVisible();
  await expect(page.getByTestId("ready-count")).toBeVisible();
  expect(await page.evaluate(() => document.documentElement.classList.contains("dark"))).toBe(true);
  await expectNoSeriousViolations(page, "/ (researcher holding a VM, dark theme)");
});

test("the admin pages have no serious accessibility problems", async ({ signInAs }) => {
  const { page, context } = await signInAs("admin", "a11y-admin-pages");
  // An operation of its own (a fleet of no VMs, so the shared pool is untouched), for the lists.
  const name = `a11y-${Date.now().toString(36)}`;
  const created = await mutate(context.request, "fleet.create", {
    name,
    driver: "local",
    instanceType: "local.sim",
    size: 0,
  });
  expect(created.error).toBeUndefined();
  const { fleetId, operation } = created.data as { fleetId: string; operation: { id: string } };
  const pages: [string, () => Promise<void>][] = [
    ["/admin/operations", () => expect(page.getByTestId("operation-row").first()).toBeVisible()],
    ["/admin/audit", () => expect(page.getByTestId("audit-row").first()).toBeVisible()],
    ["/admin/users", () => expect(page.getByTestId("user-row").first()).toBeVisible()],
    ["/admin/usage", () => expect(page.getByTestId("usage-total")).toBeVisible()],
    [
      "/admin/bookings",
      () => expect(page.getByRole("heading", { name: "Booking policy" })).toBeVisible(),
    ],
    ["/admin/groups", () => expect(page.getByRole("heading", { name: "New group" })).toBeVisible()],
    [
      "/admin/enrollment",
      () => expect(page.getByRole("heading", { name: "New token" })).toBeVisible(),
    ],
    [
      "/admin/webhooks",
      () => expect(page.getByRole("heading", { name: "New webhook" })).toBeVisible(),
    ],
  ];
  for (const [url, ready] of pages) {
    await page.goto(url);
    await ready();
    await expectNoSeriousViolations(page, url);
  }
  // The same pages in the dark theme (Tailwind's dark: variants follow the system setting).
  await page.emulateMedia({ colorScheme: "dark" });
  for (const [url, ready] of pages) {
    await page.goto(url);
    await ready();
    await expectNoSeriousViolations(page, `${url} (dark)`);
  }
  await page.emulateMedia({ colorScheme: "light" });
  // An operation's detail page, with its log.
  await page.goto(`/admin/operations/${operation.id}`);
  await expect(page.getByTestId("operation-status")).toHaveText("succeeded", { timeout: 60_000 });
  await expectNoSeriousViolations(page, "/admin/operations/[id]");
  // A confirmation in progress (users page), then cancelled.
  await page.goto("/admin/users");
  await page
    .getByTestId("user-row")
    .first()
    .getByRole("button", { name: /^Make / })
    .click();
  await expectNoSeriousViolations(page, "/admin/users (confirming a role change)");
  await page.getByRole("button", { name: "Cancel" }).click();
  await mutate(context.request, "fleet.destroy", { fleetId });
});
