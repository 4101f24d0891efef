import { Suspense } from "react";
import { refuseNonAdmin } from "../admin-only";
import { Loading } from "../ui";
import { UsageAdmin } from "./usage-admin";

export const dynamic = "force-dynamic";

export default async function UsagePage() {
  const refusal = await refuseNonAdmin("Usage");
  if (refusal) return refusal;
  return (
    <Suspense fallback={<Loading what="usage" />}>
      <UsageAdmin />
    </Suspense>
  );
}
