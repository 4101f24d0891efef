import type postgres from "postgres";
import type { Db } from "../db/client";
import { queuedOperationIds, recoverInterrupted } from "../domain/operations";
import { takeUnqueuedDeliveries, unmarkQueued } from "../domain/webhooks";
import type { Logger } from "../log";
import { isDatabaseError } from "../metrics";
import { workerMetrics } from "../worker-metrics";
import type { JobRunner } from "./runner";

/**
 * Turns queued operations into `operation.run` jobs. The API only writes the operation row (and
 * NOTIFYs `lablink_operation` at commit), so the web process needs no job queue of its own; a
 * periodic sweep catches any notification missed while no worker listened, and first recovers
 * operations whose worker died mid-run. Pending webhook deliveries become `webhook.deliver` jobs
 * the same way (NOTIFY `lablink_webhook`, then the sweep).
 */
export async function startDispatcher(o: {
  db: Db;
  sql: postgres.Sql;
  runner: JobRunner;
  log: Logger;
  sweepMs?: number;
}): Promise<{ stop: () => Promise<void>; sweep: () => Promise<void> }> {
  const send = (id: string) =>
    o.runner.send("operation.run", { operationId: id }, { singletonKey: id, singletonSeconds: 5 });
  // Webhook deliveries are written by whichever process saw the event; queue each one once.
  const deliverPending = async () => {
    for (const id of await takeUnqueuedDeliveries(o.db)) {
      try {
        await o.runner.send("webhook.deliver", { deliveryId: id }, { singletonKey: id });
      } catch (err) {
        await unmarkQueued(o.db, id);
        throw err;
      }
    }
  };
  let running: Promise<void> | null = null;
  const sweep = () => {
    running ??= (async () => {
      try {
        for (const r of await recoverInterrupted(o.db)) {
          workerMetrics().recoveryActions.inc({ action: r.outcome });
          o.log.warn(r, "operation interrupted by a dead worker");
        }
        for (const id of await queuedOperationIds(o.db)) await send(id);
        await deliverPending();
      } catch (err) {
        if (isDatabaseError(err)) workerMetrics().dbErrors.inc();
        o.log.error({ err }, "operation dispatch failed");
      } finally {
        running = null;
      }
    })();
    return running;
  };
  const listener = await o.sql.listen("lablink_operation", (id) => {
    send(id).catch((err) => o.log.error({ err }, "operation enqueue failed"));
  });
  const webhookListener = await o.sql.listen("lablink_webhook", () => {
    deliverPending().catch((err) => o.log.error({ err }, "webhook enqueue failed"));
  });
  const timer = setInterval(() => void sweep(), o.sweepMs ?? 5_000);
  await sweep();
  return {
    sweep,
    stop: async () => {
      clearInterval(timer);
      await listener.unlisten().catch(() => undefined);
      await webhookListener.unlisten().catch(() => undefined);
      await running;
    },
  };
}
