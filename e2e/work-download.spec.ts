import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createLocalFleet, destroyFleet, fleetName } from "./admin-api";
import { expect, mutate, test } from "./fixtures";

/**
 * "Take your work along": the researcher downloads their home folder from My VM (a real agent of
 * the local fleet packs it) and watches the progress; the admin sets the fleet's limit on the
 * fleet card, and a folder over it is refused with the reason. Screenshots for docs/ go to
 * e2e-artifacts/ like e2e/screenshots.spec.ts.
 */
test("researcher downloads their work folder with progress; admin sets the download limit on the fleet card", async ({
  signInAs,
}, testInfo) => {
  const shots = path.resolve(testInfo.project.testDir, "..", "e2e-artifacts");
  const admin = await signInAs("admin", "work-admin");
  const name = fleetName("work");
  const fleetId = await createLocalFleet(admin.context.request, { name, size: 1 });
  try {
    const researcher = await signInAs("researcher", "work-holder");
    const claim = await mutate(researcher.context.request, "vm.claim", { fleetId });
    expect(claim.error).toBeUndefined();
    const { page } = researcher;
    await page.reload();
    await expect(page.getByTestId("vm-agent-ready")).toHaveText("yes", { timeout: 20_000 });
    const vmName = (await page.getByTestId("vm-name").textContent())?.trim() ?? "";

    // What the researcher made on the VM (the local fleet's simulated home).
    const home = path.resolve(".data/e2e/local-fleet", vmName, "research-home");
    mkdirSync(path.join(home, "work", "results"), { recursive: true });
    writeFileSync(path.join(home, "work", "notes.md"), "# experiment 12\nit worked\n");
    writeFileSync(path.join(home, "work", "results", "run.csv"), "step,loss\n1,0.8\n2,0.3\n");
    // Incompressible: the archive is several chunks, so the progress moves.
    const weights = randomBytes(6 * 1024 * 1024);
    writeFileSync(path.join(home, "work", "weights.bin"), weights);

    // The admin sets a limit below the folder's size on the fleet card.
    await admin.page.goto("/admin/fleets");
    const card = admin.page.getByTestId("fleet-card").filter({ hasText: name });
    await expect(card.getByTestId("fleet-work-download")).toHaveText("Work download limit: 10 GiB");
    await card.getByText("Change work download limit").click();
    const field = card.getByLabel(`New work download limit for ${name} (GiB)`);
    await field.fill("0.001");
    await card.getByRole("button", { name: "Save work download limit" }).click();
    await expect(card.getByTestId("download-limit-saved")).toHaveText(
      "Saved: work download limit 1 MiB.",
    );
    await expect(card.getByTestId("fleet-work-download")).toHaveText("Work download limit: 1 MiB");

    const section = page.getByTestId("work-download");
    await section.getByRole("button", { name: "Download my work (.tar.gz)" }).click();
    await expect(section.getByRole("alert")).toContainText(
      "over this fleet's download limit of 1.0 MiB",
    );

    await field.fill("1");
    await card.getByRole("button", { name: "Save work download limit" }).click();
    await expect(card.getByTestId("fleet-work-download")).toHaveText("Work download limit: 1 GiB");

    // Every progress line the page shows, recorded as it changes (a fast download is over in
    // less time than an assertion polls).
    await page.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { progressSeen: string[] }).progressSeen = seen;
      new MutationObserver(() => {
        const text = document.querySelector('[data-testid="work-download-progress"]')?.textContent;
        if (text && seen.at(-1) !== text) seen.push(text);
      }).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    const downloading = page.waitForEvent("download");
    await section.getByRole("button", { name: "Download my work (.tar.gz)" }).click();
    const download = await downloading;
    expect(download.suggestedFilename()).toMatch(/^lablink-work-\d{4}-\d{2}-\d{2}\.tar\.gz$/);
    await expect(section.getByTestId("work-download-done")).toContainText("Saved lablink-work-");
    const seen = await page.evaluate(
      () => (window as unknown as { progressSeen: string[] }).progressSeen,
    );
    expect(seen.length).toBeGreaterThan(1);
    expect(seen.at(-1)).toMatch(/MiB received · your folder is 6\.0 MiB before compression/);

    const dir = mkdtempSync(path.join(os.tmpdir(), "lablink-e2e-work-"));
    const file = path.join(dir, "work.tar.gz");
    await download.saveAs(file);
    execFileSync("tar", ["-xzf", file, "-C", dir]);
    expect(readFileSync(path.join(dir, "work", "notes.md"), "utf8")).toBe(
      "# experiment 12\nit worked\n",
    );
    expect(readFileSync(path.join(dir, "work", "results", "run.csv"), "utf8")).toContain("2,0.3");
    expect(readFileSync(path.join(dir, "work", "weights.bin")).equals(weights)).toBe(true);
    await page.screenshot({ path: path.join(shots, "work-download-desktop.png"), fullPage: true });

    // The release confirmation offers the download too.
    await page.getByRole("button", { name: "Release VM" }).click();
    await expect(page.getByTestId("work-download-release")).toBeVisible();
    await page.screenshot({ path: path.join(shots, "work-download-release-desktop.png") });
    await page.getByRole("button", { name: "Yes, release it" }).click();
    await expect(page.getByRole("button", { name: "Claim a GPU VM" })).toBeVisible();

    // The admin turns the work archive on for the fleet (a bad bucket name is explained).
    await admin.page.goto("/admin/fleets");
    const fleetCard = admin.page.getByTestId("fleet-card").filter({ hasText: name });
    await expect(fleetCard.getByTestId("fleet-work-archive")).toHaveText(
      "Work archive on release: off",
    );
    await fleetCard.getByText("Change work archive").click();
    await fleetCard.getByLabel("S3 bucket").fill("My_Bucket");
    await fleetCard.getByRole("button", { name: "Save work archive" }).click();
    await expect(fleetCard.getByRole("alert")).toContainText("An S3 bucket name");
    await fleetCard.getByLabel("S3 bucket").fill("my-lab-work");
    await fleetCard.getByLabel("Days kept").fill("14");
    await fleetCard.getByRole("button", { name: "Save work archive" }).click();
    await expect(fleetCard.getByTestId("fleet-work-archive")).toHaveText(
      "Work archive on release: s3://my-lab-work/lablink/work/ (us-west-2), kept 14 days",
    );
    await fleetCard.getByText("Change work download limit").click();
    await fleetCard.scrollIntoViewIfNeeded();
    await admin.page.screenshot({ path: path.join(shots, "fleet-work-download-desktop.png") });
  } finally {
    await destroyFleet(admin.context.request, fleetId);
  }
});
