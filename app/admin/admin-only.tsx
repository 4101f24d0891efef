import { redirect } from "next/navigation";
import { auth } from "@/server/auth/config";
import { userRole } from "@/server/auth/dev-login";
import { getDb } from "@/server/db/client";

/**
 * For an admin page: sends a signed-out visitor to sign in, and returns the refusal to show a
 * signed-in non-admin (null for an admin). The role in the session is only a hint; the database
 * decides.
 */
export async function refuseNonAdmin(what: string): Promise<React.ReactNode | null> {
  const session = await auth();
  if (!session?.user?.id) redirect("/signin");
  if ((await userRole(getDb(), session.user.id)) === "admin") return null;
  return (
    <p
      role="alert"
      className="rounded border border-amber-300 bg-amber-50 p-4 dark:border-amber-800 dark:bg-amber-950"
    >
      {what} {what.endsWith("s") ? "are" : "is"} for LabLink admins.
    </p>
  );
}

/** Whether the signed-in visitor is an admin now (for the admin navigation). */
export async function isAdminNow(): Promise<boolean> {
  const session = await auth();
  if (!session?.user?.id) return false;
  return (await userRole(getDb(), session.user.id)) === "admin";
}
