/**
 * A worker for the crash test: runs one operation through the local driver, then hangs as a long
 * Terraform apply would, until the test kills it with SIGKILL.
 * argv: <database url> <operation id> <server url> <state dir>
 */
import path from "node:path";
import type { DriverRun } from "../../../server/cloud/driver";
import { LocalFleetDriver } from "../../../server/cloud/local/driver";
import { createDatabase } from "../../../server/db/client";
import type { Fleet } from "../../../server/db/schema";
import { executeOperation } from "../../../server/jobs/operations";
import { logger } from "../../../server/log";

const [url, operationId, serverUrl, stateDir] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
];
const { db } = createDatabase(url, { max: 2 });
const local = new LocalFleetDriver({
  db,
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
    process.send?.("applied");
    await new Promise(() => {});
  },
});
void executeOperation(
  { db, drivers: { local: hanging }, log: logger, settings: { leaseSeconds: 2, renewMs: 200 } },
  operationId,
);
