import { config } from "zod/mini";
import en from "zod/v4/locales/en.js";

/**
 * zod/mini, not the classic API: the same checks at a fraction of the bundle (classic zod is
 * ~750 KB of the agent's JavaScript and ~5 MB of its RSS), with English messages. Import it as
 * `import * as z from "./zod"` so the bundler keeps only what is used.
 */
config(en());

export * from "zod/mini";
