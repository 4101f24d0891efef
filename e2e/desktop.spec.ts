import { spawnSync } from "node:child_process";
import { readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import type { Page } from "@playwright/test";
import { expect, mutate, test, waitForReady } from "./fixtures";

/** The local fleet's desktop root colour (agent/src/desktop/host.ts DESKTOP_ROOT_COLOUR). */
const ROOT = [0x1f, 0x6f, 0x5c] as const;
const ROOT_DIR = path.resolve(import.meta.dirname, "..");

/** The colour of the remote screen at remote pixel (x, y), read off noVNC's canvas. */
function pixelAt(page: Page, x: number, y: number): Promise<number[] | null> {
  return page.evaluate(
    ([px, py]) => {
      const canvas = document.querySelector<HTMLCanvasElement>(
        '[data-testid="desktop-screen"] canvas',
      );
      if (!canvas || canvas.width === 0) return null;
      const ctx = canvas.getContext("2d");
      if (!ctx) return null;
      return Array.from(ctx.getImageData(px as number, py as number, 1, 1).data.slice(0, 3));
    },
    [x, y],
  );
}

/** Processes of this VM's desktop: they run in the VM's home, under its state folder. */
function vmProcesses(vmDir: string, names: string[]): number[] {
  return names
    .flatMap((name) =>
      spawnSync("pgrep", ["-x", name], { encoding: "utf8" }).stdout.split("\n").filter(Boolean),
    )
    .map(Number)
    .filter((pid) => {
      try {
        return readlinkSync(`/proc/${pid}/cwd`).startsWith(vmDir);
      } catch {
        return false;
      }
    });
}

/** The X display this VM's desktop runs on, from its terminal's environment. */
function vmDisplay(vmDir: string): string {
  for (const pid of vmProcesses(vmDir, ["xterm", "openbox"])) {
    const env = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
    const display = env.find((e) => e.startsWith("DISPLAY="))?.slice("DISPLAY=".length);
    if (display) return display;
  }
  throw new Error(`no desktop process found for ${vmDir}`);
}

/** An X selection's text on the VM's display, as a program there pasting it would get it. */
function xSelection(display: string, selection: "clipboard" | "primary"): string {
  const r = spawnSync("xclip", ["-o", "-selection", selection, "-display", display], {
    encoding: "utf8",
    timeout: 5_000,
  });
  return r.status === 0 ? r.stdout : "";
}

test("researcher opens the VM's desktop in the browser, types into it, and release closes it", async ({
  signInAs,
  request,
}) => {
  test.setTimeout(120_000);
  await waitForReady(request, 1);
  const { page, context } = await signInAs("researcher", "desktop");
  await page.getByRole("button", { name: "Claim a GPU VM" }).click();
  await expect(page.getByTestId("vm-agent-ready")).toHaveText("yes", { timeout: 20_000 });
  const vmName = (await page.getByTestId("vm-name").textContent())?.trim() ?? "";
  expect(vmName).not.toBe("");

  await page.getByTestId("open-desktop").click();
  await expect(page).toHaveURL(/\/desktop\/[0-9a-f-]{36}$/);
  const status = page.getByTestId("desktop-status");
  await expect(status).toHaveText("Connected", { timeout: 30_000 });

  // The remote screen is drawn: the local fleet's desktop has a known root colour.
  await expect.poll(async () => pixelAt(page, 4, 4), { timeout: 20_000 }).toEqual([...ROOT]);

  // Type into the terminal on the remote desktop (at +40+40 on the remote screen): the local
  // fleet's terminal appends what it gets to a file in the VM's state folder.
  const canvas = page.locator('[data-testid="desktop-screen"] canvas');
  const box = await canvas.boundingBox();
  const width = await canvas.evaluate((c) => (c as HTMLCanvasElement).width);
  if (!box || !width) throw new Error("no desktop canvas");
  const scale = box.width / width;
  const vmDir = path.join(ROOT_DIR, ".data/e2e/local-fleet", vmName);
  const typed = path.join(vmDir, "desktop-typed.txt");
  const read = () => {
    try {
      return readFileSync(typed, "utf8");
    } catch {
      return "";
    }
  };
  // The window manager may still be taking over the screen just after the desktop starts (and
  // drop the terminal's focus): click and type again until the terminal has it.
  const word = `typed-${Date.now()}`;
  for (let attempt = 0; attempt < 4 && !read().includes(word); attempt++) {
    await page.mouse.click(box.x + 160 * scale, box.y + 100 * scale);
    await page.keyboard.type(word);
    await page.keyboard.press("Enter");
    await expect
      .poll(read, { timeout: 4_000 })
      .toContain(word)
      .catch(() => {});
  }
  expect(read()).toContain(word);

  // Clipboard, VM to browser: a word selected in the remote terminal (a double-click on the line
  // it echoed, found on the canvas: the first row of dark text pixels below the title bar) reaches
  // the page's "Copied on the VM" box.
  const textAt = await page.evaluate(() => {
    const c = document.querySelector<HTMLCanvasElement>('[data-testid="desktop-screen"] canvas');
    const ctx = c?.getContext("2d");
    if (!c || !ctx) return null;
    const w = Math.min(c.width, 400);
    const data = ctx.getImageData(0, 0, w, Math.min(c.height, 200)).data;
    const dark = (x: number, y: number) => {
      const i = (y * w + x) * 4;
      return (data[i] ?? 255) + (data[i + 1] ?? 255) + (data[i + 2] ?? 255) < 200;
    };
    const light = (x: number, y: number) => {
      const i = (y * w + x) * 4;
      return (data[i] ?? 0) + (data[i + 1] ?? 0) + (data[i + 2] ?? 0) > 700;
    };
    for (let y = 0; y < Math.min(c.height, 200); y++) {
      let darkN = 0;
      let lightN = 0;
      let first = -1;
      for (let x = 0; x < w; x++) {
        if (dark(x, y)) {
          darkN++;
          if (first < 0) first = x;
        } else if (light(x, y)) lightN++;
      }
      // A line of text on the terminal's white background.
      if (darkN >= 8 && lightN > w / 2) return { x: first + 6, y };
    }
    return null;
  });
  if (!textAt) throw new Error("no terminal text found on the canvas");
  const remoteClip = page.getByTestId("desktop-clipboard-remote");
  for (let attempt = 0; attempt < 4 && (await remoteClip.inputValue()) === ""; attempt++) {
    await page.mouse.dblclick(box.x + textAt.x * scale, box.y + (textAt.y + 2) * scale);
    await expect(remoteClip)
      .not.toHaveValue("", { timeout: 3_000 })
      .catch(() => {});
  }
  // Whatever part of the typed word the double-click selected ("typed", "-", the digits).
  const selected = (await remoteClip.inputValue()).trim();
  expect(selected).not.toBe("");
  expect(word).toContain(selected);

  // Clipboard, browser to VM: text sent from the page's box becomes the VM's X clipboard and
  // primary selection (read with xclip on the VM's display, as any program there pasting it would
  // get it), taking over from the terminal's own selection above, and Shift+Insert pastes it into
  // the terminal.
  const display = vmDisplay(vmDir);
  const pasted = `pasted-${Date.now()}`;
  await page.getByTestId("desktop-clipboard-local").fill(pasted);
  await page.getByRole("button", { name: "Send to the VM's clipboard" }).click();
  await expect.poll(() => xSelection(display, "clipboard"), { timeout: 10_000 }).toBe(pasted);
  expect(xSelection(display, "primary")).toBe(pasted);
  // Keys go back to the desktop without a click on it: a click in the terminal would change its
  // selection, and the primary selection with it.
  await canvas.focus();
  for (let attempt = 0; attempt < 4 && !read().includes(pasted); attempt++) {
    await page.keyboard.press("Shift+Insert");
    await page.keyboard.press("Enter");
    await expect
      .poll(read, { timeout: 4_000 })
      .toContain(pasted)
      .catch(() => {});
  }
  expect(read()).toContain(pasted);

  // And back again after a paste: a program on the VM copying text (xclip setting the clipboard,
  // as an editor's Copy does) replaces the page's text and reaches the "Copied on the VM" box.
  const copied = `copied-on-vm-${Date.now()}`;
  const xclip = spawnSync("xclip", ["-selection", "clipboard", "-i", "-display", display], {
    input: copied,
    // The forked xclip keeps serving the selection: do not wait on its output.
    stdio: ["pipe", "ignore", "ignore"],
    timeout: 5_000,
  });
  expect(xclip.status).toBe(0);
  await expect(remoteClip).toHaveValue(copied, { timeout: 10_000 });

  // Window resize: the remote session takes the viewer's size (TigerVNC's Xvnc accepts the
  // RFB SetDesktopSize noVNC sends), rather than a fixed screen scaled down.
  const remoteWidth = () => canvas.evaluate((c) => (c as HTMLCanvasElement).width);
  const screenWidth = () =>
    page.getByTestId("desktop-screen").evaluate((e) => Math.floor(e.clientWidth));
  const before = await remoteWidth();
  const viewport = page.viewportSize();
  await page.setViewportSize({ width: 900, height: 700 });
  await expect.poll(remoteWidth, { timeout: 15_000 }).not.toBe(before);
  expect(Math.abs((await remoteWidth()) - (await screenWidth()))).toBeLessThanOrEqual(2);
  await expect.poll(async () => pixelAt(page, 4, 4), { timeout: 10_000 }).toEqual([...ROOT]);
  if (viewport) await page.setViewportSize(viewport);
  await expect
    .poll(async () => Math.abs((await remoteWidth()) - (await screenWidth())), { timeout: 15_000 })
    .toBeLessThanOrEqual(2);

  // The connection drops (the VM's VNC server dies): the page says so and reconnects by itself;
  // the agent starts the desktop again for it.
  // Only this VM's: the VNC server runs in the VM's home, under its state folder.
  const ours = vmProcesses(vmDir, ["Xvnc", "x11vnc"]);
  expect(ours.length).toBeGreaterThan(0);
  for (const pid of ours) process.kill(pid, "SIGKILL");
  await expect(status).toHaveAttribute("data-phase", "reconnecting", { timeout: 10_000 });
  await expect(status).toHaveText("Connected", { timeout: 30_000 });
  // The new session works: typing reaches its terminal again.
  const again = `again-${Date.now()}`;
  for (let attempt = 0; attempt < 6 && !read().includes(again); attempt++) {
    await page.mouse.click(box.x + 160 * scale, box.y + 100 * scale);
    await page.keyboard.type(again);
    await page.keyboard.press("Enter");
    await expect
      .poll(read, { timeout: 4_000 })
      .toContain(again)
      .catch(() => {});
  }
  expect(read()).toContain(again);

  await page.screenshot({ path: path.join(ROOT_DIR, "docs/screenshots/desktop-viewer.png") });

  // Release from another tab: the open desktop learns at once and stops reconnecting.
  const home = await context.newPage();
  await home.goto("/");
  await home.getByRole("button", { name: "Release VM" }).click();
  await home.getByRole("button", { name: "Yes, release it" }).click();
  await expect(status).toHaveText("VM released: the desktop is closed.", { timeout: 10_000 });
  await expect(status).toHaveAttribute("data-phase", "released");
  // No relay comes back: still released a few seconds later.
  await page.waitForTimeout(3_000);
  await expect(status).toHaveAttribute("data-phase", "released");
});

test("an admin can view a researcher's desktop; the researcher sees a notice while they do", async ({
  signInAs,
  request,
}) => {
  test.setTimeout(120_000);
  await waitForReady(request, 1);
  const researcher = await signInAs("researcher", "desktop-held");
  const claim = await mutate(researcher.context.request, "vm.claim");
  expect(claim.error).toBeUndefined();
  const { vmId } = claim.data as { vmId: string };
  await researcher.page.goto("/");
  await expect(researcher.page.getByTestId("vm-agent-ready")).toHaveText("yes", {
    timeout: 20_000,
  });
  await expect(researcher.page.getByTestId("open-desktop")).toBeVisible();
  await expect(researcher.page.getByTestId("desktop-admin-viewing")).toHaveCount(0);

  const admin = await signInAs("admin", "desktop-admin");
  await admin.page.goto(`/admin/vms/${vmId}`);
  await admin.page.getByTestId("admin-open-desktop").click();
  await expect(admin.page.getByTestId("desktop-admin-note")).toBeVisible();
  await expect(admin.page.getByTestId("desktop-status")).toHaveText("Connected", {
    timeout: 30_000,
  });
  await expect(researcher.page.getByTestId("desktop-admin-viewing")).toBeVisible({
    timeout: 15_000,
  });

  // The admin leaves: the notice goes.
  await admin.page.goto(`/admin/vms/${vmId}`);
  await expect(researcher.page.getByTestId("desktop-admin-viewing")).toHaveCount(0, {
    timeout: 15_000,
  });
});
