/**
 * `npm run sim:workshop`: replays a workshop trace through LabLink's policy code against real
 * Postgres with a virtual clock, once with a static pool sized for the peak and once with
 * LabLink's policies, and prints both side by side. See bench/sim/README.md.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { type EmbeddedHandle, startEmbeddedPostgres } from "../../server/db/embedded";
import { runMigrations } from "../../server/db/migrate";
import { withDatabase } from "../lib";
import { type Policy, simulate } from "./engine";
import { formatReport, lablinkPolicy, staticPolicy } from "./policies";
import { generateWorkshop, loadTrace } from "./trace";

const DEFAULT_TRACE = path.resolve(import.meta.dirname, "traces/two-day-workshop.json");

const { values: args } = parseArgs({
  options: {
    trace: { type: "string", default: DEFAULT_TRACE },
    generate: { type: "string" },
    seed: { type: "string", default: "11" },
    minutes: { type: "string" },
  },
});

if (args.generate) {
  const trace = generateWorkshop(Number(args.seed));
  writeFileSync(args.generate, `${JSON.stringify(trace, null, 1)}\n`);
  console.log(`wrote ${args.generate}`);
  process.exit(0);
}

const trace = loadTrace(args.trace);
let handle: EmbeddedHandle | null = null;
let adminUrl = process.env.DATABASE_URL;
if (!adminUrl) {
  const dataDir = path.resolve(".data/sim");
  mkdirSync(dataDir, { recursive: true });
  handle = await startEmbeddedPostgres({
    dataDir,
    port: Number(process.env.LABLINK_SIM_PG_PORT ?? 54369),
  });
  adminUrl = handle.url;
}

async function freshDatabase(name: string): Promise<string> {
  const admin = postgres(adminUrl as string, { max: 1, onnotice: () => {} });
  await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.unsafe(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = withDatabase(adminUrl as string, name);
  await runMigrations(url);
  return url;
}

try {
  const options = {
    seed: trace.seed,
    bootMinutes: [4, 8] as [number, number],
    minutes: args.minutes ? Number(args.minutes) : undefined,
  };
  const run = async (policy: Policy) => {
    const started = performance.now();
    const url = await freshDatabase(`lablink_sim_${policy.name}`);
    const result = await simulate(trace, policy, { ...options, url });
    console.error(
      `${policy.name}: simulated in ${((performance.now() - started) / 1000).toFixed(0)} s`,
    );
    return result;
  };
  const staticRun = await run(staticPolicy(trace));
  const lablink = await run(lablinkPolicy(trace));
  console.log(
    `trace ${trace.name} (${trace.participants.length} booked, ${trace.horizonMinutes / 60} h), ` +
      `boot ${options.bootMinutes.join("-")} min, ${cpus().length} CPUs (${cpus()[0]?.model ?? "?"})`,
  );
  console.log(formatReport(staticRun, lablink));
} finally {
  await handle?.stop();
}
process.exit(0);
