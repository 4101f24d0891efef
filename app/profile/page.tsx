import { redirect } from "next/navigation";
import { auth } from "@/server/auth/config";
import { Groups } from "./groups";
import { SshKeys } from "./ssh-keys";

export const dynamic = "force-dynamic";

export default async function ProfilePage() {
  const session = await auth();
  if (!session?.user?.id) redirect("/signin");
  return (
    <div className="space-y-6">
      <h1 className="text-2xl font-semibold">Profile</h1>
      <p className="text-sm text-slate-600 dark:text-slate-400">
        Signed in as {session.user.name ?? session.user.email}.
      </p>
      <SshKeys />
      <Groups />
    </div>
  );
}
