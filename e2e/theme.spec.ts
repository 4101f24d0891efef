import { expect, test } from "./fixtures";

const isDark = (page: import("@playwright/test").Page) =>
  page.evaluate(() => document.documentElement.classList.contains("dark"));

test("the theme follows the system, switches from the header, and persists across reloads", async ({
  page,
}) => {
  const cspErrors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy/i.test(m.text())) cspErrors.push(m.text());
  });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.goto("/");
  // Client-side data on screen: the page is hydrated and the toggle listens.
  await expect(page.getByTestId("ready-count")).toBeVisible();
  const select = page.getByRole("combobox", { name: "Theme" });
  await expect(select).toHaveValue("system");
  expect(await isDark(page)).toBe(true);

  await select.selectOption("light");
  expect(await isDark(page)).toBe(false);
  const bodyBg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const light = await bodyBg();

  // Set before the first paint by the nonce'd inline script: already right when the HTML is parsed.
  await page.reload({ waitUntil: "domcontentloaded" });
  expect(await isDark(page)).toBe(false);
  await expect(select).toHaveValue("light");

  await select.selectOption("dark");
  expect(await isDark(page)).toBe(true);
  expect(await bodyBg()).not.toBe(light);
  await page.emulateMedia({ colorScheme: "light" });
  await page.reload({ waitUntil: "domcontentloaded" });
  expect(await isDark(page)).toBe(true);
  await expect(select).toHaveValue("dark");

  // Back to the system setting, which is light now.
  await select.selectOption("system");
  expect(await isDark(page)).toBe(false);
  await page.reload({ waitUntil: "domcontentloaded" });
  expect(await isDark(page)).toBe(false);
  expect(cspErrors).toEqual([]);
});
