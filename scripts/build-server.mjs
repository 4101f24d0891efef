// `npm run build` (after `next build`): the worker, the migration command and the CLI (and the
// web process's own entry) bundled to plain ES modules in dist/, so production starts them with
// `node`, not tsx. Dependencies stay in node_modules (packages: external); only this repository's
// TypeScript is compiled in.
//   node scripts/build-server.mjs [outdir]     (default: dist/)
import { mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { build } from "esbuild";

const root = path.resolve(import.meta.dirname, "..");
const outdir = path.resolve(process.argv[2] ?? path.join(root, "dist"));

/** Entry points: the output name (dist/<name>.mjs) and its source. */
export const ENTRIES = {
  web: "server/web.ts",
  worker: "server/jobs/main.ts",
  migrate: "scripts/migrate.ts",
  lablink: "cli/main.ts",
};

// Sources find the repository (next's app dir, drizzle/, terraform/) from import.meta.dirname,
// which in one flat bundle is dist/, not their own folder: each use becomes that source's folder,
// resolved from the bundle's place relative to the repository root.
const rootFromBundle = path.relative(outdir, root) || ".";
const dirnamePlugin = {
  name: "source-dirname",
  setup(b) {
    b.onLoad({ filter: /\.ts$/ }, async (args) => {
      if (args.path.includes(`${path.sep}node_modules${path.sep}`)) return undefined;
      const { readFile } = await import("node:fs/promises");
      const source = await readFile(args.path, "utf8");
      if (!source.includes("import.meta.dirname")) return { contents: source, loader: "ts" };
      const dir = path.relative(root, path.dirname(args.path)).split(path.sep).join("/");
      return {
        contents: source.replaceAll(
          "import.meta.dirname",
          `__lablinkSourceDir(${JSON.stringify(dir)})`,
        ),
        loader: "ts",
      };
    });
  },
};

const result = await build({
  absWorkingDir: root,
  entryPoints: Object.fromEntries(Object.entries(ENTRIES).map(([k, v]) => [k, path.join(root, v)])),
  outdir,
  outExtension: { ".js": ".mjs" },
  bundle: true,
  packages: "external",
  platform: "node",
  format: "esm",
  target: "node22.12",
  sourcemap: "linked",
  legalComments: "none",
  write: false,
  plugins: [dirnamePlugin],
  banner: {
    js: [
      'import { createRequire as __lablinkCreateRequire } from "node:module";',
      'import { resolve as __lablinkResolve } from "node:path";',
      "const require = __lablinkCreateRequire(import.meta.url);",
      `const __lablinkRoot = __lablinkResolve(import.meta.dirname, ${JSON.stringify(rootFromBundle)});`,
      "const __lablinkSourceDir = (dir) => __lablinkResolve(__lablinkRoot, dir);",
    ].join("\n"),
  },
  logLevel: "warning",
});

// Each file is written beside its final name and renamed over it, so a process starting from dist/
// while a build runs reads either the old file or the new one, never half of one.
await mkdir(outdir, { recursive: true });
const staging = await mkdtemp(path.join(outdir, ".build-"));
try {
  for (const file of result.outputFiles) {
    const tmp = path.join(staging, path.basename(file.path));
    await writeFile(tmp, file.contents);
    await rename(tmp, file.path);
  }
} finally {
  await rm(staging, { recursive: true, force: true });
}
process.stdout.write(
  `built ${Object.keys(ENTRIES).length} bundles in ${path.relative(root, outdir) || "."}/\n`,
);
