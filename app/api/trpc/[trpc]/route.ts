import { handleTrpc } from "@/server/api/handler";
import { nextContext } from "@/server/api/next-context";

export const dynamic = "force-dynamic";

const handler = (req: Request) => handleTrpc(req, nextContext);

export { handler as GET, handler as POST };
