// `npm run web | worker | db:migrate`: starts dist/<name>.mjs, the plain JavaScript `npm run build`
// made, in this process (so Node flags given to this script apply to it). Production runs these;
// `npm start` runs the TypeScript through tsx for the quick start and development.
import { existsSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const name = process.argv[2];
const file = path.resolve(import.meta.dirname, "..", "dist", `${name}.mjs`);
if (!name || !existsSync(file)) {
  process.stderr.write(
    `${path.relative(process.cwd(), file) || file} is missing: run \`npm run build\` first (it compiles the web app, the worker, the migrations command and the CLI).\n`,
  );
  process.exit(1);
}
// The bundle sees the arguments it would have had when started as `node dist/<name>.mjs ...`.
process.argv.splice(1, 2, file);
await import(pathToFileURL(file).href);
