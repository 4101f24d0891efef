import { describe, expect, it } from "vitest";
import { createLogger } from "../src/log";

type Options = NonNullable<Parameters<typeof createLogger>[0]>;

const capture = (options: Omit<Options, "write" | "now">) => {
  const lines: string[] = [];
  const log = createLogger({
    ...options,
    write: (l) => lines.push(l),
    now: () => new Date("2026-11-27T07:00:00.000Z"),
  });
  return { log, lines: () => lines.map((l) => JSON.parse(l)) };
};

describe("JSON-lines logger", () => {
  it("writes {time, level, msg, ...fields} lines, one per call", () => {
    const { log, lines } = capture({ bindings: { vmId: "vm-1" } });
    log.info("registered", { state: "ready", msg: "cannot override", time: "nope" });
    expect(lines()).toEqual([
      {
        time: "2026-11-27T07:00:00.000Z",
        level: "info",
        msg: "registered",
        vmId: "vm-1",
        state: "ready",
      },
    ]);
    expect(Object.keys(lines()[0])).toEqual(["time", "level", "msg", "vmId", "state"]);
  });

  it("redacts secret-looking keys at any depth and serializes errors", () => {
    const { log, lines } = capture({});
    const err = Object.assign(new Error("boom", { cause: new Error("inner") }), {
      code: "ECONNREFUSED",
    });
    log.error("failed", {
      token: "lla_x",
      headers: { Authorization: "Bearer lla_x" },
      nested: [{ agentToken: "lla_x" }],
      error: err,
      big: 10n,
    });
    const [line] = lines();
    expect(JSON.stringify(line)).not.toContain("lla_x");
    expect(line).toMatchObject({
      token: "[redacted]",
      headers: { Authorization: "[redacted]" },
      nested: [{ agentToken: "[redacted]" }],
      error: { name: "Error", message: "boom", code: "ECONNREFUSED", cause: { message: "inner" } },
      big: "10",
    });
  });

  it("filters by level; silent logs nothing; child loggers add bindings", () => {
    const warn = capture({ level: "warn" });
    warn.log.info("hidden");
    warn.log.debug("hidden");
    warn.log.child({ component: "probe" }).warn("shown");
    expect(warn.lines()).toEqual([
      expect.objectContaining({ level: "warn", msg: "shown", component: "probe" }),
    ]);
    const silent = capture({ level: "silent" });
    silent.log.error("nothing");
    expect(silent.lines()).toEqual([]);
  });
});
