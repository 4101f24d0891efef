/**
 * A worker for the crash test: runs one operation through the local driver, then hangs as a long
 * Terraform apply would, until the test kills it with SIGKILL.
 * argv: <database url> <operation id> <server url> <state dir> [terraform <stand-in> <work dir>
 * [scenario]]
 * With `terraform`, the run is a Terraform apply that hangs after its first instance.
 */
import path from "node:path";
import { eq } from "drizzle-orm";
import type { DriverRun } from "../../../server/cloud/driver";
import { Ec2Fleet } from "../../../server/cloud/ec2/ec2";
import { LocalFleetDriver } from "../../../server/cloud/local/driver";
import { TerraformFleetDriver } from "../../../server/cloud/terraform/driver";
import { TerraformRunner } from "../../../server/cloud/terraform/runner";
import { createDatabase } from "../../../server/db/client";
import { type Fleet, operations } from "../../../server/db/schema";
import { fleetLedger } from "../../../server/domain/convergence";
import { executeOperation } from "../../../server/jobs/operations";
import { logger } from "../../../server/log";

const [url, operationId, serverUrl, stateDir, mode, standIn, workDir, scenario] =
  process.argv.slice(2) as [
    string,
    string,
    string,
    string,
    string | undefined,
    string | undefined,
    string | undefined,
    string | undefined,
  ];
const { db } = createDatabase(url, { max: 2 });
const local = new LocalFleetDriver({
  ledger: fleetLedger(db),
  serverUrl,
  rootDir: path.resolve(import.meta.dirname, "../../.."),
  stateDir,
  heartbeatIntervalS: 60,
  log: logger,
});
const hanging = Object.assign(Object.create(local) as LocalFleetDriver, {
  apply: async (fleet: Fleet, run?: DriverRun) => {
    await local.apply(fleet, run);
    run?.log("half-way: waiting for the cloud");
    // Let the operation log's batch (written every 200 ms) reach the database first.
    await new Promise((r) => setTimeout(r, 500));
    process.send?.("applied");
    await new Promise(() => {});
  },
});
const terraform =
  mode === "terraform"
    ? new TerraformFleetDriver({
        ledger: fleetLedger(db),
        runner: new TerraformRunner({
          bin: standIn as string,
          cancelGraceMs: 1_000,
          env: { STANDIN_SCENARIO: scenario ?? "interrupt" },
        }),
        moduleDir: path.resolve(import.meta.dirname, "../../../terraform"),
        workDir: workDir as string,
        backend: { kind: "local" },
        serverUrl: "https://lablink.example.edu",
        agentImage: "agent",
        ec2: new Ec2Fleet(),
      })
    : null;
if (terraform) {
  // Tell the test once the first instance exists (the stand-in then waits).
  const timer = setInterval(async () => {
    const [op] = await db.select().from(operations).where(eq(operations.id, operationId));
    if ((op?.progress?.done ?? 0) >= 2) {
      clearInterval(timer);
      process.send?.("applied");
    }
  }, 100);
}
void executeOperation(
  {
    db,
    drivers: terraform ? { terraform } : { local: hanging },
    log: logger,
    settings: { leaseSeconds: 2, renewMs: 200 },
  },
  operationId,
);
