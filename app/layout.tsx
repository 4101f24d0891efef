import type { Metadata } from "next";
import Link from "next/link";
import { auth, signOut } from "@/server/auth/config";
import "./globals.css";
import { ThemeToggle } from "./_components/theme";
import { ThemeScript } from "./_components/theme-script";
import { Providers } from "./providers";

export const metadata: Metadata = {
  title: "LabLink",
  description: "GPU machines for your lab or workshop",
};

export default async function RootLayout({ children }: { children: React.ReactNode }) {
  const session = await auth();
  return (
    <html lang="en" suppressHydrationWarning>
      <head>
        <ThemeScript />
      </head>
      <body className="min-h-screen bg-slate-50 text-slate-900 dark:bg-slate-950 dark:text-slate-100">
        <header className="border-b border-slate-200 bg-white dark:border-slate-800 dark:bg-slate-900">
          <nav
            className="mx-auto flex max-w-6xl flex-wrap items-center gap-x-6 gap-y-2 px-4 py-3"
            aria-label="Main"
          >
            <Link href="/" className="text-lg font-semibold tracking-tight">
              LabLink
            </Link>
            <Link href="/" className="text-sm hover:underline">
              My VM
            </Link>
            {session?.user && (
              <Link href="/profile" className="text-sm hover:underline">
                Profile
              </Link>
            )}
            {session?.user?.role === "admin" && (
              // The admin pages carry their own navigation (app/admin/admin-nav.tsx).
              <Link href="/admin" className="text-sm hover:underline">
                Admin
              </Link>
            )}
            <div className="ml-auto flex items-center gap-3 text-sm">
              <ThemeToggle />
              {session?.user ? (
                <>
                  <span data-testid="signed-in-as">
                    {/* Email sign-in creates users without a name: show who they are anyway. */}
                    {session.user.name || session.user.email}{" "}
                    <span className="text-slate-500 dark:text-slate-400">
                      ({session.user.role})
                    </span>
                  </span>
                  <form
                    action={async () => {
                      "use server";
                      await signOut({ redirectTo: "/" });
                    }}
                  >
                    <button
                      type="submit"
                      className="rounded border px-2 py-1 hover:bg-slate-100 dark:hover:bg-slate-800"
                    >
                      Sign out
                    </button>
                  </form>
                </>
              ) : (
                <Link
                  href="/signin"
                  className="rounded bg-indigo-600 px-3 py-1.5 font-medium text-white hover:bg-indigo-700"
                >
                  Sign in
                </Link>
              )}
            </div>
          </nav>
        </header>
        <Providers>
          <main className="mx-auto max-w-6xl px-4 py-8">{children}</main>
        </Providers>
      </body>
    </html>
  );
}
