// Bundles the agent into one self-contained ES module: `node dist/lablink-agent.mjs`.
// Nothing else is needed on the VM besides Node.js >= 20.11 (no node_modules, no tsx).
import { chmod } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const outfile = process.argv[2] ?? join(root, "dist", "lablink-agent.mjs");

await build({
  entryPoints: [join(root, "src", "main.ts")],
  outfile,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20.11",
  minify: false,
  sourcemap: false,
  legalComments: "none",
  // Some dependencies are CommonJS and call require() for Node built-ins.
  banner: {
    js: [
      "#!/usr/bin/env node",
      'import { createRequire as __lablinkCreateRequire } from "node:module";',
      "const require = __lablinkCreateRequire(import.meta.url);",
    ].join("\n"),
  },
  logLevel: "warning",
});
await chmod(outfile, 0o755);
process.stdout.write(`${outfile}\n`);
