import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import {
  type APIRequestContext,
  type Browser,
  type BrowserContext,
  test as base,
  expect,
  type Page,
} from "@playwright/test";
import postgres from "postgres";

export { expect };

/**
 * The e2e server's embedded Postgres (playwright.config.ts: .data/e2e, LABLINK_E2E_PG_PORT), for
 * tests that set up what the UI cannot make quickly (thousands of VMs, an idle agent's report).
 */
export function e2eDatabase() {
  const password = readFileSync(path.resolve(".data/e2e/postgres-password.secret"), "utf8").trim();
  return postgres({
    host: "127.0.0.1",
    port: Number(process.env.LABLINK_E2E_PG_PORT ?? 54359),
    user: "lablink",
    password,
    database: "lablink",
    onnotice: () => {},
  });
}

export type Role = "researcher" | "admin";

/** The local fleet `scripts/start.ts` keeps running for the tests (LABLINK_LOCAL_FLEET_SIZE). */
export const FLEET_SIZE = 4;

export type Totals = {
  ready: number;
  booting: number;
  inUse: number;
  unhealthy: number;
  total: number;
};

/**
 * A name no other test (or earlier run against the same server) has used: sign-in upserts the user
 * by name, so a shared name would share a VM. Sign-in allows [A-Za-z0-9 ._-], at most 40.
 */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
}

/** Signs in through the real development sign-in form (Auth.js credentials route). */
export async function signIn(page: Page, name: string, role: Role): Promise<void> {
  await page.goto("/signin");
  await page.getByLabel("Your name").fill(name);
  await page.getByRole("radio", { name: role === "admin" ? "Admin" : "Researcher" }).check();
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(role === "admin" ? /\/admin$/ : /\/$/);
  await expect(page.getByTestId("signed-in-as")).toContainText(name);
}

/** Reads the public availability counts (superjson: {"result":{"data":{"json":…}}}). */
export async function poolTotals(request: APIRequestContext): Promise<Totals> {
  const res = await request.get("/api/trpc/pool.summary");
  expect(res.ok(), `pool.summary answered ${res.status()}`).toBe(true);
  const body = (await res.json()) as { result: { data: { json: { totals: Totals } } } };
  return body.result.data.json.totals;
}

/** Waits until at least `n` VMs are ready to claim (released VMs come back once their agent wiped them). */
export async function waitForReady(
  request: APIRequestContext,
  n: number,
  timeout = 45_000,
): Promise<void> {
  await expect
    .poll(async () => (await poolTotals(request)).ready, {
      message: `waiting for ${n} ready VM(s)`,
      timeout,
      intervals: [250, 500, 1_000],
    })
    .toBeGreaterThanOrEqual(n);
}

type TrpcError = { error: { json: { message: string } } };

/** Calls a tRPC mutation with the signed-in context's session cookie. */
export async function mutate(request: APIRequestContext, path: string, input: unknown = {}) {
  const res = await request.post(`/api/trpc/${path}`, { data: { json: input } });
  const body = (await res.json()) as { result?: { data: { json: unknown } } } & Partial<TrpcError>;
  return {
    ok: res.ok(),
    status: res.status(),
    data: body.result?.data.json,
    error: body.error?.json.message,
  };
}

export type Person = { name: string; role: Role; context: BrowserContext; page: Page };

type Fixtures = {
  /**
   * Signs a new person in, in a browser context of their own (own cookies). Researchers' VMs are
   * released when the test ends, pass or fail, so every test starts with the whole fleet.
   */
  signInAs: (role: Role, prefix?: string) => Promise<Person>;
};

async function releaseQuietly(person: Person) {
  await mutate(person.context.request, "vm.release").catch(() => undefined);
}

export const test = base.extend<Fixtures>({
  signInAs: async ({ browser }: { browser: Browser }, use) => {
    const people: Person[] = [];
    await use(async (role, prefix = role) => {
      const context = await browser.newContext();
      const page = await context.newPage();
      const person = { name: uniqueName(prefix), role, context, page };
      people.push(person);
      await signIn(page, person.name, role);
      return person;
    });
    for (const p of people) {
      if (p.role === "researcher") await releaseQuietly(p);
      await p.context.close();
    }
  },
});
