import { redirect } from "next/navigation";
import { auth } from "@/server/auth/config";
import { userRole } from "@/server/auth/dev-login";
import { getDb } from "@/server/db/client";
import { ApiTokens } from "./api-tokens";
import { Groups } from "./groups";
import { SshKeys } from "./ssh-keys";
import { WorkArchives } from "./work-archives";

export const dynamic = "force-dynamic";

export default async function ProfilePage() {
  const session = await auth();
  if (!session?.user?.id) redirect("/signin");
  // The database decides, not the session's copy of the role.
  const admin = (await userRole(getDb(), session.user.id)) === "admin";
  return (
    <div className="space-y-6">
      <h1 className="text-2xl font-semibold">Profile</h1>
      <p className="text-sm text-slate-600 dark:text-slate-400">
        Signed in as {session.user.name ?? session.user.email}.
      </p>
      <SshKeys />
      <WorkArchives />
      <Groups />
      {admin && <ApiTokens />}
    </div>
  );
}
