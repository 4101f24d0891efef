import { redirect } from "next/navigation";
import { auth } from "@/server/auth/config";
import { userRole } from "@/server/auth/dev-login";
import { getDb } from "@/server/db/client";
import { BootTimings } from "./boot-timings";
import { GpuCharts } from "./gpu-charts";
import { VmDetail } from "./vm-detail";
import { VmLogs } from "./vm-logs";

export const dynamic = "force-dynamic";

export default async function VmPage({ params }: { params: Promise<{ id: string }> }) {
  const session = await auth();
  if (!session?.user?.id) redirect("/signin");
  if ((await userRole(getDb(), session.user.id)) !== "admin") {
    return (
      <p
        role="alert"
        className="rounded border border-amber-300 bg-amber-50 p-4 dark:border-amber-800 dark:bg-amber-950"
      >
        VM details are for LabLink admins.
      </p>
    );
  }
  const { id } = await params;
  return (
    <div className="space-y-6">
      <VmDetail vmId={id} />
      <BootTimings vmId={id} />
      <VmLogs vmId={id} />
      <GpuCharts vmId={id} />
    </div>
  );
}
