import { redirect } from "next/navigation";
import { z } from "zod";
import { auth } from "@/server/auth/config";
import { DesktopViewer } from "./viewer";

export const dynamic = "force-dynamic";

/** The browser desktop of a VM: its holder's, or (for an admin) anyone's, audited. */
export default async function DesktopPage({ params }: { params: Promise<{ vmId: string }> }) {
  const session = await auth();
  if (!session?.user?.id) redirect("/signin");
  const { vmId } = await params;
  const id = z.uuid().safeParse(vmId);
  if (!id.success) redirect("/");
  return <DesktopViewer vmId={id.data} />;
}
