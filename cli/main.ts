// The CLI's process entry: `node dist/lablink.mjs` (built) or cli/bin.mjs (`npx lablink`).
import { main } from "./lablink";

process.exitCode = await main(process.argv);
