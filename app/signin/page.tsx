import { redirect } from "next/navigation";
import { AuthError } from "next-auth";
import { signIn } from "@/server/auth/config";
import { env } from "@/server/env";

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

export default async function SignInPage({
  searchParams,
}: {
  searchParams: Promise<{ error?: string }>;
}) {
  const { error } = await searchParams;
  const devLogin = env().LABLINK_DEV_LOGIN;
  return (
    <div className="mx-auto max-w-md">
      <h1 className="mb-6 text-2xl font-semibold">Sign in to LabLink</h1>
      {error && (
        <p
          role="alert"
          className="mb-4 rounded border border-red-300 bg-red-50 p-3 text-sm text-red-800 dark:border-red-800 dark:bg-red-950 dark:text-red-200"
        >
          Sign-in failed. Names may use letters, digits, spaces, dots, dashes and underscores (at
          most 40).
        </p>
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
      ) : (
        <p className="rounded border border-slate-200 bg-white p-6 text-sm dark:border-slate-800 dark:bg-slate-900">
          No sign-in method is configured. Ask your LabLink admin.
        </p>
      )}
    </div>
  );
}
