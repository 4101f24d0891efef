import { Suspense } from "react";
import { refuseNonAdmin } from "../admin-only";
import { Loading } from "../ui";
import { OperationsList } from "./operations-list";

export const dynamic = "force-dynamic";

export default async function OperationsPage() {
  const refusal = await refuseNonAdmin("Operations");
  if (refusal) return refusal;
  return (
    <Suspense fallback={<Loading what="operations" />}>
      <OperationsList />
    </Suspense>
  );
}
