import { Suspense } from "react";
import { refuseNonAdmin } from "../admin-only";
import { Loading } from "../ui";
import { BookingsAdmin } from "./bookings-admin";

export const dynamic = "force-dynamic";

export default async function BookingsPage() {
  const refusal = await refuseNonAdmin("Bookings");
  if (refusal) return refusal;
  return (
    <Suspense fallback={<Loading what="bookings" />}>
      <BookingsAdmin />
    </Suspense>
  );
}
