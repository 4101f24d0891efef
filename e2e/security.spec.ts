import { expect, signIn, test, uniqueName } from "./fixtures";

test("pages carry a nonce CSP without unsafe-inline, and nothing may frame them", async ({
  request,
}) => {
  const res = await request.get("/signin");
  const csp = res.headers()["content-security-policy"] ?? "";
  expect(csp).toMatch(/script-src 'self' 'nonce-[A-Za-z0-9+/=]+' 'strict-dynamic'/);
  expect(csp).toContain("frame-ancestors 'none'");
  expect(csp).not.toContain("unsafe-inline");
  expect(res.headers()["x-frame-options"]).toBe("DENY");
  // A fresh nonce per response.
  const again = (await request.get("/signin")).headers()["content-security-policy"];
  expect(again).not.toBe(csp);
  // Plain HTTP on localhost: no HSTS (it would pin localhost to HTTPS).
  expect(res.headers()["strict-transport-security"]).toBeUndefined();
  const api = await request.get("/api/trpc/pool.summary");
  expect(api.headers()["content-security-policy"]).toContain("default-src 'none'");
});

test("researcher signs in and claims with the CSP on, without a single violation", async ({
  page,
}) => {
  const violations: string[] = [];
  page.on("console", (m) => {
    if (/Content.Security.Policy|Refused to/i.test(m.text())) violations.push(m.text());
  });
  await signIn(page, uniqueName("csp"), "researcher");
  // The portal is a client component: it renders its live pool summary only once hydrated.
  await expect(page.getByTestId("ready-count")).toContainText(/ready/);
  expect(violations).toEqual([]);
});

test("someone outside the allow-list sees a clear not-allowed page", async ({ page }) => {
  await page.goto("/signin?error=AccessDenied");
  await expect(page).toHaveURL(/\/signin\/not-allowed$/);
  await expect(
    page.getByRole("heading", { name: "This account may not use LabLink" }),
  ).toBeVisible();
  await expect(page.getByText("nothing was created for it")).toBeVisible();
});
