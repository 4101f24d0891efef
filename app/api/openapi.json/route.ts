import { openApiJson } from "@/server/api/openapi";

export const dynamic = "force-dynamic";

/**
 * The OpenAPI 3.1 description of the API an API token can call (server/api/openapi.ts). Public:
 * it describes procedures, never data, and every call still needs its token.
 */
export function GET() {
  return new Response(openApiJson(), {
    headers: { "content-type": "application/json", "cache-control": "public, max-age=300" },
  });
}
