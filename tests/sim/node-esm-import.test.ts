import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { expect, it } from "vitest";

// `npm start`, `npm run dev` and `npm run sim:workshop` run the server's TypeScript under plain
// Node with tsx, where a CommonJS package's named exports exist only if Node can detect them;
// vitest's bundler reads packages' ESM builds and would not notice.
it("loads the recurring schedules module under plain Node (tsx), as npm start does", async () => {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [
      "--import",
      "tsx",
      "-e",
      'const m = await import("./server/domain/recurring-schedules.ts"); console.log(typeof m.occurrencesBetween);',
    ],
    { cwd: process.cwd(), env: { ...process.env, LOG_LEVEL: "silent" } },
  );
  expect(stdout.trim()).toBe("function");
}, 60_000);
