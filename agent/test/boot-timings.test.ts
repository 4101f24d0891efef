import { cp, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  BootTimingsSource,
  readBootedAt,
  readCloudInit,
  readContainerReady,
} from "../src/boot/timings";
import { tempDir } from "./helpers";

const FIX = join(import.meta.dirname, "fixtures", "cloud-init");

describe("boot timing readers (real cloud-init and /proc formats)", () => {
  it("reads the kernel boot time from /proc/stat btime", async () => {
    expect(await readBootedAt(join(FIX, "proc"))).toBe("2025-11-27T07:00:05.000Z");
  });

  it("falls back to now minus /proc/uptime, and to null without either", async () => {
    const at = await readBootedAt(join(FIX, "proc-uptime"));
    expect(Math.abs(Date.parse(at ?? "") - (Date.now() - 350_500))).toBeLessThan(2_000);
    expect(await readBootedAt(join(FIX, "nothing-here"))).toBeNull();
  });

  it("done: the last stage's finish time from status.json", async () => {
    expect(await readCloudInit(join(FIX, "done"))).toEqual({
      cloudInitFinishedAt: "2025-11-27T07:01:04.118Z",
      cloudInitStatus: "done",
    });
  });

  it("running: status.json without result.json", async () => {
    expect(await readCloudInit(join(FIX, "running"))).toEqual({
      cloudInitFinishedAt: null,
      cloudInitStatus: "running",
    });
  });

  it("error: errors in result.json make the status error, still with a finish time", async () => {
    expect(await readCloudInit(join(FIX, "error"))).toEqual({
      cloudInitFinishedAt: "2025-11-27T07:01:10.500Z",
      cloudInitStatus: "error",
    });
  });

  it("result.json alone: its mtime is the finish time", async () => {
    const dir = await tempDir();
    await cp(join(FIX, "result-only", "result.json"), join(dir, "result.json"));
    const t = new Date("2026-11-27T07:05:00.000Z");
    await utimes(join(dir, "result.json"), t, t);
    expect(await readCloudInit(dir)).toEqual({
      cloudInitFinishedAt: "2026-11-27T07:05:00.000Z",
      cloudInitStatus: "done",
    });
  });

  it("disabled cloud-init, no cloud-init at all, and a half-written status.json", async () => {
    expect((await readCloudInit(join(FIX, "disabled"))).cloudInitStatus).toBe("disabled");
    expect(await readCloudInit(join(FIX, "nothing-here"))).toEqual({
      cloudInitFinishedAt: null,
      cloudInitStatus: null,
    });
    const dir = await tempDir();
    await writeFile(join(dir, "status.json"), '{"v1": {"init": {"fin');
    expect((await readCloudInit(dir)).cloudInitStatus).toBeNull();
  });

  it("the container's ready marker: its mtime, null while missing or unconfigured", async () => {
    const dir = await tempDir();
    const marker = join(dir, "ready");
    expect(await readContainerReady(marker)).toBeNull();
    expect(await readContainerReady(null)).toBeNull();
    await writeFile(marker, "");
    const t = new Date("2026-11-27T07:02:00.000Z");
    await utimes(marker, t, t);
    expect(await readContainerReady(marker)).toBe("2026-11-27T07:02:00.000Z");
  });

  it("a source picks up cloud-init finishing after the agent started", async () => {
    const dir = await tempDir();
    const started = new Date("2026-11-27T07:00:30.000Z");
    const source = new BootTimingsSource(
      { procRoot: join(FIX, "proc"), cloudInitDir: dir, containerReadyFile: join(dir, "ready") },
      started,
    );
    expect(source.latest()).toBeNull();
    await cp(join(FIX, "running", "status.json"), join(dir, "status.json"));
    await source.refresh();
    expect(source.latest()).toEqual({
      bootedAt: "2025-11-27T07:00:05.000Z",
      cloudInitFinishedAt: null,
      cloudInitStatus: "running",
      containerReadyAt: null,
      agentStartedAt: "2026-11-27T07:00:30.000Z",
    });
    await cp(join(FIX, "done", "status.json"), join(dir, "status.json"));
    await cp(join(FIX, "done", "result.json"), join(dir, "result.json"));
    await source.refresh();
    expect(source.latest()).toMatchObject({
      cloudInitFinishedAt: "2025-11-27T07:01:04.118Z",
      cloudInitStatus: "done",
    });
  });
});
