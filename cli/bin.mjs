#!/usr/bin/env node
// `npx lablink`: the CLI is TypeScript run through tsx (a dependency), like the worker and agent.
import { register } from "tsx/esm/api";

register();
const { main } = await import("./lablink.ts");
process.exitCode = await main(process.argv);
