import { refuseNonAdmin } from "../../admin-only";
import { OperationDetail } from "./operation-detail";

export const dynamic = "force-dynamic";

export default async function OperationPage({ params }: { params: Promise<{ id: string }> }) {
  const refusal = await refuseNonAdmin("Operations");
  if (refusal) return refusal;
  const { id } = await params;
  return <OperationDetail operationId={id} />;
}
