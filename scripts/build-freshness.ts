import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";

/** What `next build` reads: a change to any of these makes the web app's build stale. */
const WEB_SOURCES = [
  "app",
  "server",
  "public",
  "next.config.ts",
  "package-lock.json",
  "postcss.config.mjs",
];

function newestMtime(p: string): number {
  if (!existsSync(p)) return 0;
  const st = statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const entry of readdirSync(p)) {
    if (entry === "node_modules" || entry.startsWith(".")) continue;
    newest = Math.max(newest, newestMtime(path.join(p, entry)));
  }
  return newest;
}

/** The web app's build (.next/BUILD_ID's time) and whether it is newer than its sources. */
export function webBuildState(root: string): { built: number; current: boolean } {
  const buildId = path.join(root, ".next/BUILD_ID");
  const built = existsSync(buildId) ? statSync(buildId).mtimeMs : 0;
  const sources = Math.max(...WEB_SOURCES.map((p) => newestMtime(path.join(root, p))));
  return { built, current: built > sources };
}
