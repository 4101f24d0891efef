export default function CheckEmailPage() {
  return (
    <div className="mx-auto max-w-md">
      <h1 className="mb-6 text-2xl font-semibold">Check your email</h1>
      <p className="rounded-lg border border-slate-200 bg-white p-6 text-sm dark:border-slate-800 dark:bg-slate-900">
        We sent you a sign-in link. It works once, for 10 minutes. You can close this page.
      </p>
    </div>
  );
}
