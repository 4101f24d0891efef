import { afterEach, describe, expect, it, vi } from "vitest";
import { allJobs } from "../../server/jobs/definitions";
import { startSchedules } from "../../server/jobs/schedule";
import { logger } from "../../server/log";

afterEach(() => {
  vi.useRealTimers();
});

const deps = { staleSeconds: 60, drivers: {} };

describe("job schedules live on the job definitions", () => {
  it("every job declares a cadence or is on-demand only", () => {
    const cadence = Object.fromEntries(
      allJobs({ ...deps, reconcileIntervalS: 60 }).map((j) => [
        j.name,
        j.schedule ? [j.schedule.everySeconds, j.schedule.singletonSeconds] : "on demand",
      ]),
    );
    expect(cadence).toEqual({
      "fleet.reconcile": [60, 60],
      "vm.sweep-silent": [10, 10],
      "vm.expire-holds": [30, 30],
      "fleet.run-schedules": [15, 15],
      "gpu-samples.prune": [600, 600],
      "webhook-deliveries.prune": [3600, 3600],
      "fleet.warm-pool": [15, 15],
      "vm.recover": [30, 30],
      "booking.activate": [15, 15],
      "operation.run": "on demand",
      "webhook.deliver": "on demand",
    });
  });

  it("reconciliation is not scheduled when its interval is 0", () => {
    const job = allJobs({ ...deps, reconcileIntervalS: 0 }).find(
      (j) => j.name === "fleet.reconcile",
    );
    expect(job?.schedule).toBeUndefined();
  });

  it("the timers enqueue each job at its cadence, and nothing after stop", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    const sent: { name: string; payload: unknown; options: unknown }[] = [];
    const schedules = startSchedules(
      {
        log: logger,
        send: async (name, payload, options) => {
          sent.push({ name, payload, options });
        },
      },
      allJobs({ ...deps, reconcileIntervalS: 0 }),
    );
    expect(sent).toEqual([]);
    await vi.advanceTimersByTimeAsync(30_000);
    const names = sent.map((s) => s.name).sort();
    expect(names).toEqual([
      "booking.activate",
      "booking.activate",
      "fleet.run-schedules",
      "fleet.run-schedules",
      "fleet.warm-pool",
      "fleet.warm-pool",
      "vm.expire-holds",
      "vm.recover",
      "vm.sweep-silent",
      "vm.sweep-silent",
      "vm.sweep-silent",
    ]);
    expect(sent.find((s) => s.name === "vm.sweep-silent")?.options).toEqual({
      singletonSeconds: 10,
    });
    schedules.stop();
    sent.length = 0;
    await vi.advanceTimersByTimeAsync(600_000);
    expect(sent).toEqual([]);
  });
});
