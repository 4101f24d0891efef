import { getDb } from "@/server/db/client";
import { env } from "@/server/env";
import { renderMetrics, scrapeAllowed } from "@/server/metrics";

export const dynamic = "force-dynamic";

/**
 * Prometheus metrics (text format), for a scraper that sends `Authorization: Bearer
 * <LABLINK_METRICS_TOKEN>`. Off (404) without the token configured. See docs/operations.md.
 */
export async function GET(req: Request) {
  const headers = { "cache-control": "no-store" };
  switch (scrapeAllowed(req.headers.get("authorization"), env().LABLINK_METRICS_TOKEN)) {
    case "off":
      return Response.json(
        { error: "Metrics are off: set LABLINK_METRICS_TOKEN to turn them on." },
        { status: 404, headers },
      );
    case "denied":
      return Response.json(
        { error: "Send `Authorization: Bearer <LABLINK_METRICS_TOKEN>`." },
        { status: 401, headers: { ...headers, "www-authenticate": 'Bearer realm="metrics"' } },
      );
  }
  try {
    const { contentType, body } = await renderMetrics(getDb());
    return new Response(body, { headers: { ...headers, "content-type": contentType } });
  } catch {
    return Response.json({ error: "The database could not be read." }, { status: 503, headers });
  }
}
