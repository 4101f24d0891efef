import type { Page } from "@playwright/test";
import { expect, test, uniqueName, waitForReady } from "./fixtures";

/** Presses Tab until the element with this accessible name has focus (at most 30 times). */
async function tabTo(page: Page, role: "button" | "textbox" | "radio", name: string) {
  const target = page.getByRole(role, { name, exact: true });
  for (let i = 0; i < 30; i++) {
    if (await target.evaluate((el) => el === document.activeElement).catch(() => false)) return;
    await page.keyboard.press("Tab");
  }
  throw new Error(`could not reach ${role} "${name}" with Tab`);
}

test("a researcher can sign in, claim and release a VM with the keyboard alone", async ({
  page,
  request,
}) => {
  await waitForReady(request, 1);
  const name = uniqueName("keys");
  await page.goto("/signin");
  await tabTo(page, "textbox", "Your name");
  await page.keyboard.press("ControlOrMeta+a");
  await page.keyboard.type(name);
  await page.keyboard.press("Enter"); // submits the form; Researcher is the default role
  await page.waitForURL(/\/$/);

  await tabTo(page, "button", "Claim a GPU VM");
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("vm-state")).toHaveText("claimed");
  await expect(page.getByTestId("vm-agent-ready")).toHaveText("yes", { timeout: 15_000 });

  await tabTo(page, "button", "Release VM");
  await page.keyboard.press("Enter");
  await tabTo(page, "button", "Yes, release it");
  await page.keyboard.press("Enter");
  await expect(page.getByRole("button", { name: "Claim a GPU VM" })).toBeVisible();
});
