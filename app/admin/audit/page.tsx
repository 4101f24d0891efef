import { Suspense } from "react";
import { refuseNonAdmin } from "../admin-only";
import { Loading } from "../ui";
import { AuditLog } from "./audit-log";

export const dynamic = "force-dynamic";

export default async function AuditPage() {
  const refusal = await refuseNonAdmin("The audit log");
  if (refusal) return refusal;
  return (
    <Suspense fallback={<Loading what="the audit log" />}>
      <AuditLog />
    </Suspense>
  );
}
