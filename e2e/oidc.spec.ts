import { expect, test, uniqueName } from "./fixtures";
import { startOidcProvider } from "./oidc-provider";

let stop: (() => Promise<void>) | undefined;
test.beforeAll(async () => {
  stop = await startOidcProvider();
});
test.afterAll(async () => {
  await stop?.();
});

async function signInWithProvider(page: import("@playwright/test").Page, login: string) {
  await page.goto("/signin");
  await page.getByRole("button", { name: "Continue with Example University" }).click();
  // The provider's own (development) login and consent pages.
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill("any password");
  await page.getByRole("button", { name: "Sign-in" }).click();
  await page.getByRole("button", { name: "Continue" }).click();
}

test("researcher signs in with the university's OpenID provider", async ({ page }) => {
  const name = uniqueName("oidc").toLowerCase();
  await signInWithProvider(page, name);
  await page.waitForURL(/127\.0\.0\.1:\d+\/$/);
  await expect(page.getByTestId("signed-in-as")).toContainText(name);
  await expect(page.getByTestId("signed-in-as")).toContainText("researcher");
});

test("an account outside the allowed domains sees the not-allowed page", async ({ page }) => {
  await signInWithProvider(page, `${uniqueName("eve")}@elsewhere.org`);
  await expect(page).toHaveURL(/\/signin\/not-allowed$/);
  await expect(
    page.getByRole("heading", { name: "This account may not use LabLink" }),
  ).toBeVisible();
  await page.goto("/");
  await expect(page.getByTestId("signed-in-as")).toHaveCount(0);
});
