#!/usr/bin/env node
// `npx lablink`: the built CLI (dist/lablink.mjs, `npm run build`) when it is there and newer than
// the CLI's sources; otherwise the TypeScript itself through tsx (a dependency), so a fresh clone
// and a CLI being edited both run what is in cli/.
import { readdirSync, statSync } from "node:fs";
import path from "node:path";

const built = path.join(import.meta.dirname, "..", "dist", "lablink.mjs");

function builtIsCurrent() {
  let builtAt;
  try {
    builtAt = statSync(built).mtimeMs;
  } catch {
    return false;
  }
  // The CLI's own files, and the server's settings that `lablink config check` loads.
  const sources = [
    ...readdirSync(import.meta.dirname)
      .filter((f) => f.endsWith(".ts"))
      .map((f) => path.join(import.meta.dirname, f)),
    path.join(import.meta.dirname, "..", "server", "env.ts"),
    path.join(import.meta.dirname, "..", "server", "http.ts"),
  ];
  return sources.every((f) => statSync(f).mtimeMs <= builtAt);
}

if (builtIsCurrent()) {
  await import(built);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("./main.ts");
}
