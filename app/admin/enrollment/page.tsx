import { refuseNonAdmin } from "../admin-only";
import { EnrollmentAdmin } from "./enrollment-admin";

export const dynamic = "force-dynamic";

export default async function EnrollmentPage() {
  const refusal = await refuseNonAdmin("Enrollment tokens");
  if (refusal) return refusal;
  return <EnrollmentAdmin />;
}
