import { expect, test } from "./fixtures";

test("admin creates an API token on the profile, sees it once, uses it, and revokes it", async ({
  signInAs,
  playwright,
  baseURL,
}) => {
  const { page } = await signInAs("admin", "tokens");
  await page.goto("/profile");
  const section = page.getByRole("region", { name: "API tokens" });
  await expect(section).toBeVisible();
  await section.getByLabel("Name").fill("nightly export");
  await section.getByLabel("Scope").selectOption("read");
  await section.getByRole("button", { name: "Create token" }).click();
  const shown = page.getByTestId("new-api-token");
  await expect(shown).toContainText(/^llk_/);
  const token = (await shown.textContent())?.trim() ?? "";
  await expect(page.getByTestId("api-tokens")).toContainText("nightly export");

  // The token reads as this admin over plain HTTP, and a read-only token cannot change anything.
  const api = await playwright.request.newContext({
    baseURL,
    extraHTTPHeaders: { authorization: `Bearer ${token}` },
  });
  expect((await api.get("/api/trpc/fleet.list")).status()).toBe(200);
  const write = await api.post("/api/trpc/vm.release", { data: { json: null } });
  expect(write.status()).toBe(403);

  // Shown once: gone after a reload, while the list keeps its name.
  await page.reload();
  await expect(page.getByTestId("new-api-token")).toHaveCount(0);
  await expect(page.getByTestId("api-tokens")).toContainText("nightly export");
  await page.getByRole("button", { name: "Revoke token nightly export" }).click();
  await expect(page.getByTestId("api-tokens")).toContainText(/revoked/i);
  await expect.poll(async () => (await api.get("/api/trpc/fleet.list")).status()).toBe(401);
  await api.dispose();
});

test("a researcher's profile has no API token section", async ({ signInAs }) => {
  const { page } = await signInAs("researcher", "no-tokens");
  await page.goto("/profile");
  await expect(page.getByRole("heading", { name: "SSH keys" })).toBeVisible();
  await expect(page.getByRole("region", { name: "API tokens" })).toHaveCount(0);
});
