import path from "node:path";
import type { APIRequestContext } from "@playwright/test";
import { createLocalFleet, destroyFleet, fleetName, query } from "./admin-api";
import { expect, mutate, test } from "./fixtures";

/** A tRPC mutation whose input carries Dates (superjson's meta says which fields are Dates). */
async function mutateWithDates(
  request: APIRequestContext,
  procedure: string,
  input: Record<string, unknown>,
) {
  const json: Record<string, unknown> = {};
  const values: Record<string, ["Date"]> = {};
  for (const [k, v] of Object.entries(input)) {
    if (v instanceof Date) {
      json[k] = v.toISOString();
      values[k] = ["Date"];
    } else json[k] = v;
  }
  const res = await request.post(`/api/trpc/${procedure}`, { data: { json, meta: { values } } });
  const body = (await res.json()) as {
    result?: { data: { json: unknown } };
    error?: { json: { message: string } };
  };
  return { data: body.result?.data.json, error: body.error?.json.message };
}

async function emailOf(request: APIRequestContext) {
  return (await query<{ email: string }>(request, "user.me")).email;
}

/** Screenshots for docs/screenshots, beside e2e/screenshots.spec.ts's. */
const shots = (file: string) =>
  path.resolve(test.info().project.testDir, "..", "e2e-artifacts", `${file}.png`);

/** A local fleet with no VMs whose warm pool may grow to `max`: bookable capacity without agents. */
async function emptyBookableFleet(request: APIRequestContext, prefix: string, max: number) {
  const name = fleetName(prefix);
  const fleetId = await createLocalFleet(request, { name, size: 0 });
  const pool = await mutate(request, "fleet.setWarmPool", {
    fleetId,
    policy: { desiredReady: 0, maxSize: max },
  });
  expect(pool.error).toBeUndefined();
  return { name, fleetId };
}

test("admin opens a fleet for bookings, books seats for a workshop and sees them on the calendar", async ({
  signInAs,
}) => {
  const ada = await signInAs("researcher", "ada");
  const bob = await signInAs("researcher", "bob");
  const emails = [await emailOf(ada.context.request), await emailOf(bob.context.request)];
  const { page } = await signInAs("admin", "book-admin");
  const { name, fleetId } = await emptyBookableFleet(page.request, "workshop", 3);
  try {
    await page.goto("/admin/bookings");
    await page.getByLabel("Fleet").selectOption({ label: name });
    await expect(page.getByTestId("booking-status")).toContainText("Not bookable");
    await page.getByLabel("Seats (bookable VMs)").fill("2");
    await page.getByRole("button", { name: "Open for bookings" }).click();
    await expect(page.getByTestId("booking-status")).toHaveText(
      "Bookable: 2 of the fleet's 3 VMs can be booked at any time.",
    );

    // Tomorrow 09:00–12:00 (the form's default start) for both researchers.
    await page.getByLabel("Workshop name").fill("Intro to CUDA");
    await page.getByLabel("Hours").fill("3");
    await page.getByLabel("Researchers' emails (one seat each)").fill(emails.join("\n"));
    await page.getByRole("button", { name: "Book seats" }).click();
    await expect(page.getByRole("status").filter({ hasText: "Booked 2 seats." })).toBeVisible();

    const calendar = page.getByTestId("booking-calendar");
    await expect(calendar.getByRole("cell", { name: "2/2" })).toHaveCount(3);
    const list = page.getByTestId("admin-bookings");
    await expect(list.getByRole("row").filter({ hasText: "Intro to CUDA" })).toHaveCount(2);
    await expect(list).toContainText(ada.name);

    // Both seats are taken for that time: one more is refused, saying so, and nothing is kept.
    await page.getByLabel("Researchers' emails (one seat each)").fill(emails[0] as string);
    await page.getByLabel("Workshop name").fill("Overflow");
    await page.getByRole("button", { name: "Book seats" }).click();
    await expect(
      page.getByRole("alert").filter({ hasText: "Only 0 of the 1 seats are free" }),
    ).toBeVisible();
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.screenshot({ path: shots("bookings-admin-desktop"), fullPage: true });

    // Cancelling one seat frees it on the calendar.
    await list
      .getByRole("button", { name: new RegExp(`Cancel the booking of ${ada.name}`) })
      .click();
    await page.getByRole("button", { name: "Yes, cancel" }).click();
    await expect(calendar.getByRole("cell", { name: "1/2" })).toHaveCount(3);
  } finally {
    await destroyFleet(page.request, fleetId);
  }
});

test("researcher books a slot for tomorrow and sees it; the last seat goes to one researcher only", async ({
  signInAs,
}) => {
  const admin = await signInAs("admin", "book-admin");
  const { name, fleetId } = await emptyBookableFleet(admin.page.request, "bookable", 1);
  const policy = await mutate(admin.page.request, "booking.setPolicy", {
    fleetId,
    policy: { seats: 1, maxMinutes: 180 },
  });
  expect(policy.error).toBeUndefined();
  try {
    const { page } = await signInAs("researcher", "booker");
    await page.goto("/");
    const section = page.getByRole("region", { name: "Bookings" });
    await section.getByLabel("Fleet").selectOption({ label: `${name}: local.sim (NVIDIA L4)` });
    await section.getByLabel("Length").selectOption({ label: "2 h" });
    await section.getByRole("button", { name: "Book", exact: true }).click();
    await expect(section.getByRole("status")).toContainText("Booked");
    const mine = section.getByTestId("my-bookings");
    await expect(mine.getByRole("row").filter({ hasText: name })).toContainText("Booked");
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.screenshot({ path: shots("bookings-researcher-desktop"), fullPage: true });

    // Someone else wants the same slot: the only seat is taken, and the page says so.
    const other = await signInAs("researcher", "late");
    await other.page.goto("/");
    const theirs = other.page.getByRole("region", { name: "Bookings" });
    await theirs.getByLabel("Fleet").selectOption({ label: `${name}: local.sim (NVIDIA L4)` });
    await theirs.getByRole("button", { name: "Book", exact: true }).click();
    await expect(theirs.getByTestId("booking-error")).toContainText(
      `All 1 seats of ${name} are booked`,
    );

    // The booker cancels; the slot is free for the other researcher.
    await mine.getByRole("button", { name: new RegExp(`Cancel booking on ${name}`) }).click();
    await expect(mine.getByRole("row").filter({ hasText: name })).toContainText("Cancelled");
    await theirs.getByRole("button", { name: "Book", exact: true }).click();
    await expect(theirs.getByTestId("my-bookings")).toContainText("Booked");
  } finally {
    await destroyFleet(admin.page.request, fleetId);
  }
});

test("a VM is held for a booking at its start, and the booker claims it from My VM", async ({
  signInAs,
}) => {
  const admin = await signInAs("admin", "book-admin");
  const name = fleetName("held");
  const fleetId = await createLocalFleet(admin.page.request, { name, size: 1 });
  try {
    const policy = await mutate(admin.page.request, "booking.setPolicy", {
      fleetId,
      policy: { seats: 1, leadMinutes: 15, graceMinutes: 15 },
    });
    expect(policy.error).toBeUndefined();
    const booker = await signInAs("researcher", "held-booker");
    const booked = await mutateWithDates(booker.context.request, "booking.book", {
      fleetId,
      startsAt: new Date(Date.now() + 60_000),
      minutes: 60,
    });
    expect(booked.error).toBeUndefined();

    // Within the lead window the fleet's one VM is kept for the booking: a walk-in gets none.
    const walkIn = await signInAs("researcher", "walk-in");
    const refused = await mutate(walkIn.context.request, "vm.claim", { fleetId });
    expect(refused.error).toContain("held for bookings starting soon");

    // The worker's booking job (every 15 s) sets the VM aside; My VM offers it.
    await booker.page.goto("/");
    const banner = booker.page.getByTestId("booked-vm-ready");
    await expect(banner).toContainText(`Your booked VM on ${name} is ready`, { timeout: 45_000 });
    await booker.page.setViewportSize({ width: 1280, height: 900 });
    await booker.page.screenshot({ path: shots("bookings-vm-ready-desktop"), fullPage: true });
    await banner.getByRole("button", { name: "Claim your booked VM" }).click();
    await expect(booker.page.getByTestId("vm-state")).toHaveText("claimed");
    await expect(booker.page.getByTestId("vm-agent-ready")).toHaveText("yes", { timeout: 30_000 });
    await expect(booker.page.getByTestId("my-bookings")).toContainText("In use");
  } finally {
    await destroyFleet(admin.page.request, fleetId);
  }
});
