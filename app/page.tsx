import Link from "next/link";
import { auth } from "@/server/auth/config";
import { PoolSummary } from "./_components/pool-summary";
import { Portal } from "./_components/portal";

export const dynamic = "force-dynamic";

export default async function Home() {
  const session = await auth();
  if (!session?.user) {
    return (
      <div className="space-y-8">
        <section className="space-y-3">
          <h1 className="text-3xl font-semibold tracking-tight">GPU machines for your lab</h1>
          <p className="max-w-2xl text-slate-600 dark:text-slate-400">
            Sign in, claim a ready GPU VM, connect to it and release it when you are done. Your
            admin keeps the fleet healthy.
          </p>
          <Link
            href="/signin"
            className="inline-block rounded bg-indigo-600 px-4 py-2 font-medium text-white hover:bg-indigo-700"
          >
            Sign in to claim a VM
          </Link>
        </section>
        <PoolSummary />
      </div>
    );
  }
  return <Portal />;
}
