import path from "node:path";
import type { Page } from "@playwright/test";
import { expect, mutate, test, waitForReady } from "./fixtures";

const VIEWPORTS = [
  { name: "desktop", width: 1280, height: 800 },
  { name: "mobile", width: 390, height: 844 },
] as const;

// For people reviewing the UI (and the README): not compared against baselines.
test("the main pages render at desktop and mobile widths", async ({
  signInAs,
  request,
  page,
}, testInfo) => {
  const dir = path.resolve(testInfo.project.testDir, "..", "e2e-artifacts");
  await waitForReady(request, 1);
  const researcher = await signInAs("researcher", "screens");
  const claim = await mutate(researcher.context.request, "vm.claim");
  expect(claim.error).toBeUndefined();
  const { vmId } = claim.data as { vmId: string };
  const admin = await signInAs("admin", "screens-admin");

  const shots: { file: string; page: Page; path: string; ready: (p: Page) => Promise<void> }[] = [
    {
      file: "home",
      page,
      path: "/",
      ready: (p) => expect(p.getByTestId("ready-count")).toBeVisible(),
    },
    {
      file: "signin",
      page,
      path: "/signin",
      ready: (p) => expect(p.getByLabel("Your name")).toBeVisible(),
    },
    {
      file: "researcher-vm",
      page: researcher.page,
      path: "/",
      ready: async (p) => {
        await expect(p.getByTestId("vm-agent-ready")).toHaveText("yes", { timeout: 15_000 });
        await expect(p.getByTestId("ready-count")).toBeVisible();
      },
    },
    {
      file: "profile",
      page: researcher.page,
      path: "/profile",
      ready: (p) => expect(p.getByRole("heading", { name: "SSH keys" })).toBeVisible(),
    },
    {
      file: "admin",
      page: admin.page,
      path: "/admin",
      ready: (p) => expect(p.getByTestId("vm-row").first()).toBeVisible(),
    },
    {
      file: "vm-detail",
      page: admin.page,
      path: `/admin/vms/${vmId}`,
      ready: (p) => expect(p.getByTestId("history")).toBeVisible(),
    },
    {
      file: "fleets",
      page: admin.page,
      path: "/admin/fleets",
      ready: (p) => expect(p.getByTestId("fleet-card").first()).toBeVisible(),
    },
  ];
  // Each page in the light theme at both widths, and in the dark theme at desktop width.
  const runs = [
    ...VIEWPORTS.map((viewport) => ({ viewport, scheme: "light" as const, suffix: viewport.name })),
    { viewport: VIEWPORTS[0], scheme: "dark" as const, suffix: "desktop-dark" },
  ];
  for (const { viewport, scheme, suffix } of runs) {
    for (const shot of shots) {
      await shot.page.emulateMedia({ colorScheme: scheme });
      await shot.page.setViewportSize({ width: viewport.width, height: viewport.height });
      await shot.page.goto(shot.path);
      await shot.ready(shot.page);
      await shot.page.screenshot({
        path: path.join(dir, `${shot.file}-${suffix}.png`),
        fullPage: true,
      });
    }
  }
});
