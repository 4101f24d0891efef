import { redirect } from "next/navigation";
import { auth } from "@/server/auth/config";
import { userRole } from "@/server/auth/dev-login";
import { getDb } from "@/server/db/client";
import { FleetDashboard } from "./fleet-dashboard";

export const dynamic = "force-dynamic";

export default async function AdminPage() {
  const session = await auth();
  if (!session?.user?.id) redirect("/signin");
  // The role in the session is only a hint; the database decides.
  if ((await userRole(getDb(), session.user.id)) !== "admin") {
    return (
      <p
        role="alert"
        className="rounded border border-amber-300 bg-amber-50 p-4 dark:border-amber-800 dark:bg-amber-950"
      >
        The fleet dashboard is for LabLink admins.
      </p>
    );
  }
  return <FleetDashboard />;
}
