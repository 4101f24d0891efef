import { refuseNonAdmin } from "../admin-only";
import { WebhooksAdmin } from "./webhooks-admin";

export const dynamic = "force-dynamic";

export default async function WebhooksPage() {
  const refusal = await refuseNonAdmin("Webhooks");
  if (refusal) return refusal;
  return <WebhooksAdmin />;
}
