import { defineConfig } from "vitest/config";

// `cd agent && npx vitest run` uses this file; the root config runs the same tests as agent/test/**.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 20_000,
  },
});
