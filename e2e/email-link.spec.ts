import { SMTPServer } from "smtp-server";
import { SMTP_PORT } from "../playwright.config";
import { expect, test, uniqueName } from "./fixtures";

/**
 * Email sign-in links against a real SMTP server: whatever host a request names, the mailed link
 * points at LABLINK_PUBLIC_URL (the e2e server's own address), so a forged header cannot mail a
 * victim a real link to someone else's host.
 */
const mails: { to: string; body: string }[] = [];
let smtp: SMTPServer;

test.beforeAll(async () => {
  smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS", "AUTH"],
    logger: false,
    onData(stream, session, callback) {
      let body = "";
      stream.on("data", (d: Buffer) => {
        body += d.toString("utf8");
      });
      stream.on("end", () => {
        const to = session.envelope.rcptTo.map((r) => r.address).join(",");
        mails.push({ to, body });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => smtp.listen(SMTP_PORT, "127.0.0.1", resolve));
});
test.afterAll(async () => {
  await new Promise<void>((resolve) => smtp.close(() => resolve()));
});

/** The sign-in link in the mail to `to` (quoted-printable soft breaks undone). */
async function linkMailedTo(to: string): Promise<string> {
  let link = "";
  await expect
    .poll(
      () => {
        const mail = mails.find((m) => m.to === to);
        const text = mail?.body.replace(/=\r?\n/g, "").replace(/=3D/g, "=") ?? "";
        link = /(https?:\/\/\S+\/api\/auth\/callback\/email\S+)/.exec(text)?.[1] ?? "";
        return link;
      },
      { message: `waiting for a sign-in mail to ${to}`, timeout: 20_000 },
    )
    .not.toBe("");
  return link;
}

test("a sign-in link asked for with a forged X-Forwarded-Host points at LabLink and signs in", async ({
  browser,
  baseURL,
}) => {
  const attacker = await browser.newContext({
    extraHTTPHeaders: {
      "x-forwarded-host": "lablink.attacker.example",
      "x-forwarded-proto": "https",
    },
  });
  const page = await attacker.newPage();
  const email = `${uniqueName("mail").toLowerCase()}@example.edu`;
  await page.goto("/signin");
  await page.getByLabel("Email address").fill(email);
  await page.getByRole("button", { name: "Email me a sign-in link" }).click();
  await expect(page.getByRole("heading", { name: "Check your email" })).toBeVisible();
  const link = await linkMailedTo(email);
  expect(new URL(link).origin).toBe(new URL(baseURL as string).origin);
  expect(link).not.toContain("attacker");
  await attacker.close();

  // The link is real: the recipient who opens it is signed in.
  const recipient = await browser.newContext();
  const mine = await recipient.newPage();
  await mine.goto(link);
  await expect(mine.getByTestId("signed-in-as")).toContainText(email.split("@")[0] as string);
  await recipient.close();
});

test("a sign-in link asked for with a forged Host header points at LabLink", async ({
  playwright,
  baseURL,
}) => {
  const api = await playwright.request.newContext({ baseURL });
  const email = `${uniqueName("host").toLowerCase()}@example.edu`;
  const { csrfToken } = (await (await api.get("/api/auth/csrf")).json()) as { csrfToken: string };
  const res = await api.post("/api/auth/signin/email", {
    headers: { host: "lablink.attacker.example" },
    form: { email, csrfToken, callbackUrl: `${baseURL}/` },
    maxRedirects: 0,
  });
  expect(res.status()).toBe(302);
  const link = await linkMailedTo(email);
  expect(new URL(link).origin).toBe(new URL(baseURL as string).origin);
  await api.dispose();
});
