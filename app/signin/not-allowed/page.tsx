import Link from "next/link";

export default function NotAllowedPage() {
  return (
    <div className="mx-auto max-w-md">
      <h1 className="mb-6 text-2xl font-semibold">This account may not use LabLink</h1>
      <div className="space-y-3 rounded-lg border border-slate-200 bg-white p-6 text-sm dark:border-slate-800 dark:bg-slate-900">
        <p>
          LabLink only accepts sign-ins from the addresses and domains your institution allows. The
          account you used is not one of them, so nothing was created for it.
        </p>
        <p>
          If you think you should have access, ask your LabLink admin to add your address or domain.
        </p>
        <p>
          <Link href="/signin" className="text-indigo-700 underline dark:text-indigo-300">
            Sign in with another account
          </Link>
        </p>
      </div>
    </div>
  );
}
