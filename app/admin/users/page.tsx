import { Suspense } from "react";
import { refuseNonAdmin } from "../admin-only";
import { Loading } from "../ui";
import { UsersAdmin } from "./users-admin";

export const dynamic = "force-dynamic";

export default async function UsersPage() {
  const refusal = await refuseNonAdmin("Users");
  if (refusal) return refusal;
  return (
    <Suspense fallback={<Loading what="users" />}>
      <UsersAdmin />
    </Suspense>
  );
}
