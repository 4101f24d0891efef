import { generateKeyPairSync } from "node:crypto";
import { expect, test, waitForReady } from "./fixtures";

/** A fresh ed25519 public key in OpenSSH format. */
function ed25519PublicKey(comment: string): string {
  const { publicKey } = generateKeyPairSync("ed25519");
  const raw = Buffer.from(publicKey.export({ format: "jwk" }).x as string, "base64url");
  const field = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  const blob = Buffer.concat([field(Buffer.from("ssh-ed25519")), field(raw)]);
  return `ssh-ed25519 ${blob.toString("base64")} ${comment}`;
}

test("researcher manages SSH keys in the profile, with errors shown inline", async ({
  signInAs,
}) => {
  const { page } = await signInAs("researcher", "keys");
  await page.getByRole("link", { name: "Profile" }).click();
  await expect(page.getByRole("heading", { name: "SSH keys" })).toBeVisible();
  await expect(page.getByRole("region", { name: "Groups" })).toContainText("You are in no group");

  await page.getByLabel("Public key").fill("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 short@key");
  await page.getByRole("button", { name: "Add key" }).click();
  // Filtered: Next's route announcer is an alert region too.
  await expect(page.getByRole("alert").filter({ hasText: "truncated" })).toBeVisible();

  await page.getByLabel("Public key").fill(ed25519PublicKey("me@laptop"));
  await page.getByLabel("Name (optional)").fill("laptop");
  await page.getByRole("button", { name: "Add key" }).click();
  const list = page.getByTestId("ssh-keys");
  await expect(list).toContainText("laptop");
  await expect(list).toContainText("SHA256:");
  await page.getByRole("button", { name: "Remove key laptop" }).click();
  await expect(list).toContainText("No keys yet.");
});

test("researcher connects with Chrome Remote Desktop and sees the hand-off succeed", async ({
  signInAs,
  request,
}) => {
  await waitForReady(request, 1);
  const { page } = await signInAs("researcher", "crd");
  await page.getByRole("button", { name: "Claim a GPU VM" }).click();
  await expect(page.getByTestId("vm-agent-ready")).toHaveText("yes", { timeout: 15_000 });

  // Anything but a start-host command with one --code is refused before it reaches the VM.
  await page.getByLabel("Command from Google").fill('echo "$(cat /etc/passwd)"');
  await page.getByLabel("PIN").fill("493817");
  await page.getByRole("button", { name: "Set up remote desktop" }).click();
  await expect(page.getByRole("alert").filter({ hasText: /code/i })).toBeVisible();

  await page
    .getByLabel("Command from Google")
    .fill(
      'DISPLAY= /opt/google/chrome-remote-desktop/start-host --code="4/0AbCdEfGhIjKlMnOpQrStUv" --redirect-url="https://remotedesktop.google.com/_/oauthredirect" --name=$(hostname)',
    );
  await page.getByLabel("PIN").fill("493817");
  await page.getByRole("button", { name: "Set up remote desktop" }).click();
  await expect(page.getByTestId("crd-status")).toContainText("Remote desktop is ready", {
    timeout: 20_000,
  });
});
