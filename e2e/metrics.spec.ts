import { METRICS_TOKEN } from "../playwright.config";
import { expect, test } from "./fixtures";

test("Prometheus scrapes the fleet's metrics with its token, and nobody else can", async ({
  request,
}) => {
  const refused = await request.get("/api/metrics");
  expect(refused.status()).toBe(401);
  expect(refused.headers()["www-authenticate"]).toBe('Bearer realm="metrics"');
  expect(
    (
      await request.get("/api/metrics", { headers: { authorization: "Bearer wrong-token-value" } })
    ).status(),
  ).toBe(401);

  const scrape = () =>
    request.get("/api/metrics", { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
  const res = await scrape();
  expect(res.status()).toBe(200);
  expect(res.headers()["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
  expect(res.headers()["cache-control"]).toBe("no-store");
  const body = await res.text();
  // The local fleet of four, from Postgres.
  const vms = [...body.matchAll(/^lablink_vms\{fleet="local",state="(\w+)"\} (\d+)$/gm)];
  expect(vms.reduce((n, m) => n + Number(m[2]), 0)).toBeGreaterThanOrEqual(4);
  // Agents' heartbeats (answered by server/web.ts's gateway, not Next) count into the same
  // registry the Next route renders: one set of metrics per process.
  const heartbeats = () =>
    scrape()
      .then((r) => r.text())
      .then((text) =>
        Number(
          /^lablink_api_calls_total\{path="agent\.heartbeat",code="OK"\} (\d+)$/m.exec(text)?.[1] ??
            0,
        ),
      );
  const first = await heartbeats();
  expect(first).toBeGreaterThan(0);
  // Heartbeats every 2 s here: the counter moves.
  await expect.poll(heartbeats, { timeout: 15_000 }).toBeGreaterThan(first);
});
