import { headers } from "next/headers";
import { redirect } from "next/navigation";
import { AuthError } from "next-auth";
import { getMailer, signIn } from "@/server/auth/config";
import { NOT_ALLOWED_PATH, signInOptions } from "@/server/auth/options";
import { DEFAULT_RATE_LIMITS, hitRateLimit } from "@/server/auth/rate-limit";
import { getDb } from "@/server/db/client";
import { env } from "@/server/env";
import { clientIp } from "@/server/http";

export const dynamic = "force-dynamic";

async function devSignInAction(formData: FormData) {
  "use server";
  try {
    await signIn("dev", {
      name: String(formData.get("name") ?? ""),
      role: String(formData.get("role") ?? "researcher"),
      redirectTo: formData.get("role") === "admin" ? "/admin" : "/",
    });
  } catch (e) {
    // A successful sign-in throws Next's redirect; only Auth.js errors are failures.
    if (e instanceof AuthError) redirect("/signin?error=invalid");
    throw e;
  }
}

/** Sign-in attempts count per client IP; over the limit the page says when to try again. */
async function limited(): Promise<boolean> {
  const ip = clientIp(await headers()) ?? "unknown";
  const r = await hitRateLimit(getDb(), `signIn:ip:${ip}`, DEFAULT_RATE_LIMITS.signIn);
  return !r.allowed;
}

async function emailSignInAction(formData: FormData) {
  "use server";
  if (await limited()) redirect("/signin?error=TooMany");
  const email = String(formData.get("email") ?? "")
    .trim()
    .slice(0, 254);
  try {
    await signIn("email", { email, redirectTo: "/" });
  } catch (e) {
    if (e instanceof AuthError) redirect("/signin?error=EmailSignin");
    throw e;
  }
}

async function providerSignInAction(formData: FormData) {
  "use server";
  if (await limited()) redirect("/signin?error=TooMany");
  const provider = String(formData.get("provider") ?? "");
  if (provider !== "oidc" && provider !== "github") redirect("/signin?error=Configuration");
  await signIn(provider, { redirectTo: "/" });
}

const ERRORS: Record<string, string> = {
  invalid:
    "Sign-in failed. Names may use letters, digits, spaces, dots, dashes and underscores (at most 40).",
  Verification:
    "That sign-in link has expired or was already used. Links work once, for 10 minutes: ask for a new one.",
  AccessDenied: "This account may not sign in to LabLink.",
  OAuthAccountNotLinked:
    "This email address already signs in another way. Use the method you used before.",
  EmailSignin: "We could not send the sign-in link. Check the address and try again.",
  TooMany: "Too many sign-in attempts from your network. Wait a minute and try again.",
};

const box =
  "space-y-4 rounded-lg border border-slate-200 bg-white p-6 dark:border-slate-800 dark:bg-slate-900";
const button = "w-full rounded bg-indigo-600 px-4 py-2 font-medium text-white hover:bg-indigo-700";

export default async function SignInPage({
  searchParams,
}: {
  searchParams: Promise<{ error?: string }>;
}) {
  const { error } = await searchParams;
  if (error === "AccessDenied") redirect(NOT_ALLOWED_PATH);
  const options = signInOptions(env(), Boolean(getMailer()));
  const devLogin = options.dev;
  const external = options.email || options.oidc || options.github;
  return (
    <div className="mx-auto max-w-md">
      <h1 className="mb-6 text-2xl font-semibold">Sign in to LabLink</h1>
      {error && (
        <p
          role="alert"
          className="mb-4 rounded border border-red-300 bg-red-50 p-3 text-sm text-red-800 dark:border-red-800 dark:bg-red-950 dark:text-red-200"
        >
          {ERRORS[error] ?? "Sign-in failed. Try again."}
        </p>
      )}
      {external && (
        <div className="mb-6 space-y-4">
          {(options.oidc || options.github) && (
            <form action={providerSignInAction} className={box}>
              {options.oidc && (
                <button type="submit" name="provider" value="oidc" className={button}>
                  Continue with {options.oidc.name}
                </button>
              )}
              {options.github && (
                <button type="submit" name="provider" value="github" className={button}>
                  Continue with GitHub
                </button>
              )}
            </form>
          )}
          {options.email && (
            <form action={emailSignInAction} className={box}>
              <div>
                <label htmlFor="email" className="mb-1 block text-sm font-medium">
                  Email address
                </label>
                <input
                  id="email"
                  name="email"
                  type="email"
                  required
                  maxLength={254}
                  autoComplete="email"
                  className="w-full rounded border border-slate-300 px-3 py-2 dark:border-slate-700 dark:bg-slate-950"
                />
              </div>
              <button type="submit" className={button}>
                Email me a sign-in link
              </button>
            </form>
          )}
        </div>
      )}
      {devLogin ? (
        <form
          action={devSignInAction}
          className="space-y-4 rounded-lg border border-slate-200 bg-white p-6 dark:border-slate-800 dark:bg-slate-900"
        >
          <p className="text-sm text-slate-600 dark:text-slate-400">
            Development sign-in: no password. It works only on this machine (localhost) and is off
            in production.
          </p>
          <div>
            <label htmlFor="name" className="mb-1 block text-sm font-medium">
              Your name
            </label>
            <input
              id="name"
              name="name"
              required
              maxLength={40}
              defaultValue="alice"
              className="w-full rounded border border-slate-300 px-3 py-2 dark:border-slate-700 dark:bg-slate-950"
            />
          </div>
          <fieldset>
            <legend className="mb-1 text-sm font-medium">Role</legend>
            <div className="flex gap-4 text-sm">
              <label className="flex items-center gap-2">
                <input type="radio" name="role" value="researcher" defaultChecked /> Researcher
              </label>
              <label className="flex items-center gap-2">
                <input type="radio" name="role" value="admin" /> Admin
              </label>
            </div>
          </fieldset>
          <button
            type="submit"
            className="w-full rounded bg-indigo-600 px-4 py-2 font-medium text-white hover:bg-indigo-700"
          >
            Sign in
          </button>
        </form>
      ) : external ? null : (
        <p className="rounded border border-slate-200 bg-white p-6 text-sm dark:border-slate-800 dark:bg-slate-900">
          No sign-in method is configured. Ask your LabLink admin.
        </p>
      )}
    </div>
  );
}
