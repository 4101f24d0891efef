import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { metrics } from "../../server/metrics";
import { workerMetrics } from "../../server/worker-metrics";

const dir = path.resolve(import.meta.dirname, "../../docs/monitoring");

type Rule = {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  annotations?: Record<string, string>;
};
const rules: Rule[] = (
  parse(readFileSync(path.join(dir, "alerts.yml"), "utf8")) as { groups: { rules: Rule[] }[] }
).groups.flatMap((g) => g.rules);

type Panel = { title: string; targets?: { expr: string }[]; panels?: Panel[] };
const dashboard = JSON.parse(readFileSync(path.join(dir, "lablink-dashboard.json"), "utf8")) as {
  panels: Panel[];
  templating: { list: { type: string; query?: unknown }[] };
};

const KEYWORDS = new Set(
  "by without on ignoring group_left group_right and or unless bool offset inf nan".split(" "),
);

/**
 * The metric names a PromQL expression reads: identifiers left once strings, label matchers,
 * ranges, grouping clauses and function calls are taken out; histogram series map to their
 * histogram.
 */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/label_values\(\s*([^,)]+?)\s*,\s*\w+\s*\)/g, " $1 ")
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, " ")
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names = new Set<string>();
  for (const m of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*(?=\s*(\()?)/g)) {
    if (m[1] || KEYWORDS.has(m[0])) continue; // a function call or a keyword
    if (/^\d/.test(m[0])) continue;
    names.add(m[0].replace(/_(bucket|sum|count)$/, ""));
  }
  return [...names];
}

async function exported(): Promise<Set<string>> {
  const all = [
    ...(await metrics().registry.getMetricsAsJSON()),
    ...(await workerMetrics().registry.getMetricsAsJSON()),
  ];
  return new Set(all.map((m) => m.name));
}

function dashboardExprs(): string[] {
  const walk = (ps: Panel[]): string[] =>
    ps.flatMap((p) => [...(p.targets ?? []).map((t) => t.expr), ...walk(p.panels ?? [])]);
  const variables = dashboard.templating.list
    .filter((v) => v.type === "query")
    .map((v) =>
      typeof v.query === "string" ? v.query : String((v.query as { query: string }).query),
    );
  return [...walk(dashboard.panels), ...variables];
}

describe("monitoring files", () => {
  it("reads metric names out of PromQL", () => {
    expect(
      metricNames(
        'histogram_quantile(0.95, sum by (le, kind) (rate(lablink_x_bucket{a="b(c)"}[$__rate_interval]))) > 0 and on (fleet) lablink_y',
      ).sort(),
    ).toEqual(["lablink_x", "lablink_y"]);
    expect(metricNames("label_values(lablink_vms, fleet)")).toEqual(["lablink_vms"]);
  });

  it("uses only metrics the web or worker process exports", async () => {
    const names = await exported();
    const used = new Map<string, string>();
    for (const r of rules) for (const n of metricNames(r.expr)) used.set(n, `alert ${r.alert}`);
    for (const e of dashboardExprs()) for (const n of metricNames(e)) used.set(n, `panel ${e}`);
    expect(used.size).toBeGreaterThan(15);
    const missing = [...used].filter(([n]) => !names.has(n)).map(([n, where]) => `${n} (${where})`);
    expect(missing).toEqual([]);
  });

  it("covers the alerts the runbook promises, each with a for:, a summary and a description", () => {
    const alerts = rules.filter((r) => r.alert);
    for (const name of [
      "LabLinkPoolEmpty",
      "LabLinkVmsFailing",
      "LabLinkOperationsFailing",
      "LabLinkAgentsSilent",
      "LabLinkDatabaseErrors",
    ])
      expect(alerts.map((a) => a.alert)).toContain(name);
    for (const a of alerts) {
      expect(a.for, a.alert).toMatch(/^\d+[smh]$/);
      expect(a.annotations?.summary, a.alert).toBeTruthy();
      expect(a.annotations?.description, a.alert).toBeTruthy();
    }
  });

  it("takes its Prometheus data source from a dashboard variable", () => {
    expect(dashboard.templating.list.some((v) => v.type === "datasource")).toBe(true);
    const raw = readFileSync(path.join(dir, "lablink-dashboard.json"), "utf8");
    expect(raw).not.toMatch(/"uid":\s*"(?!\$\{datasource\}|lablink)/);
  });
});
