import { workDownloadResponse } from "@/server/api/work-export";
import { auth } from "@/server/auth/config";
import { getDatabase } from "@/server/db/client";
import { clientIp } from "@/server/http";

export const dynamic = "force-dynamic";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The holder's work folder as a streamed tar.gz (server/api/work-export.ts). Session only: the
 * signed-in researcher who holds this VM now; nobody else, admins included.
 */
export async function GET(req: Request, ctx: { params: Promise<{ vmId: string }> }) {
  const { vmId } = await ctx.params;
  const headers = { "cache-control": "no-store" };
  // Another site may not start a download in the researcher's name (navigation or fetch).
  if (req.headers.get("sec-fetch-site") === "cross-site") {
    return Response.json({ error: "Start the download from LabLink." }, { status: 403, headers });
  }
  if (!UUID.test(vmId)) {
    return Response.json({ error: "That is not a VM id." }, { status: 400, headers });
  }
  const session = await auth();
  const userId = session?.user?.id;
  if (!userId) {
    return Response.json({ error: "Sign in first." }, { status: 401, headers });
  }
  const day = new Date().toISOString().slice(0, 10);
  return workDownloadResponse(
    { db: getDatabase().db },
    {
      userId,
      vmId: vmId.toLowerCase(),
      actor: { kind: "user", id: userId, ip: clientIp(req.headers) },
      signal: req.signal,
      fileName: `lablink-work-${day}.tar.gz`,
    },
  );
}
