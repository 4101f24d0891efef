import { refuseNonAdmin } from "../admin-only";
import { GroupsAdmin } from "./groups-admin";

export const dynamic = "force-dynamic";

export default async function GroupsPage() {
  const refusal = await refuseNonAdmin("Groups");
  if (refusal) return refusal;
  return <GroupsAdmin />;
}
