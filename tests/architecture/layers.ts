import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import ts from "typescript";

/**
 * The layer and writer rules of docs/architecture.md, checked over source text with the
 * TypeScript parser (no type checking: fast, and it sees exactly what is written).
 */

export type SourceFile = { path: string; text: string };

/** Tables only server/domain/ may write, by their Drizzle export name and their SQL name. */
const OWNED_TABLES: Record<string, string> = {
  vms: "vms",
  fleets: "fleets",
  operations: "operations",
  auditEvents: "audit_events",
};
const OWNED_SQL = new Set(Object.values(OWNED_TABLES));

/**
 * Set-based statements that write their audit rows in the same SQL statement as the change
 * (one round trip on the hot path, one statement for any number of VMs), not through audit().
 */
export const SET_BASED_AUDIT: Record<string, string> = {
  "server/domain/allocation.ts": "the claim: pick, update and audit in one prepared statement",
  "server/domain/health.ts": "the silent-agent sweep: every silent VM and its audit row at once",
};

type Import = { from: string; to: string; typeOnly: boolean };
type Write = { file: string; table: string; line: number; how: string };

export type Parsed = { imports: Import[]; writes: Write[] };

const EXTS = [".ts", ".tsx", "/index.ts", "/index.tsx"];

function resolve(from: string, spec: string, known: Set<string>): string | null {
  let base: string;
  if (spec.startsWith("@/")) base = spec.slice(2);
  else if (spec.startsWith(".")) base = path.posix.join(path.posix.dirname(from), spec);
  else return null;
  if (known.has(base)) return base;
  for (const ext of EXTS) if (known.has(base + ext)) return base + ext;
  return null;
}

function lineOf(sf: ts.SourceFile, node: ts.Node): number {
  return sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
}

// Raw SQL: INSERT INTO / UPDATE / DELETE FROM an owned table, written out or as ${table}.
const RAW_WRITE = /\b(?:insert\s+into|update|delete\s+from)\s+"?([a-z_]+)"?/gi;

function templateText(node: ts.TemplateLiteral, schemaNames: Map<string, string>): string {
  if (ts.isNoSubstitutionTemplateLiteral(node)) return node.text;
  let out = node.head.text;
  for (const span of node.templateSpans) {
    const e = span.expression;
    const table = ts.isIdentifier(e) ? schemaNames.get(e.text) : undefined;
    out += (table ? OWNED_TABLES[table] : "?") + span.literal.text;
  }
  return out;
}

/** Imports and writes of every file, keyed by repository-relative path. */
export function parse(files: SourceFile[]): Map<string, Parsed> {
  const known = new Set(files.map((f) => f.path));
  const out = new Map<string, Parsed>();
  for (const file of files) {
    const sf = ts.createSourceFile(file.path, file.text, ts.ScriptTarget.Latest, true);
    const imports: Import[] = [];
    const writes: Write[] = [];
    // Local name → schema export name, for identifiers imported from server/db/schema.
    const schemaNames = new Map<string, string>();
    const addImport = (spec: string, typeOnly: boolean) => {
      const to = resolve(file.path, spec, known);
      if (to) imports.push({ from: file.path, to, typeOnly });
    };
    const visit = (node: ts.Node) => {
      if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
        const clause = node.importClause;
        const named = clause?.namedBindings;
        const allTypes =
          !!clause &&
          (clause.isTypeOnly ||
            (!clause.name &&
              !!named &&
              ts.isNamedImports(named) &&
              named.elements.length > 0 &&
              named.elements.every((e) => e.isTypeOnly)));
        addImport(node.moduleSpecifier.text, allTypes);
        const to = resolve(file.path, node.moduleSpecifier.text, known);
        if (to?.startsWith("server/db/schema") && named && ts.isNamedImports(named)) {
          for (const e of named.elements) {
            const exported = (e.propertyName ?? e.name).text;
            if (exported in OWNED_TABLES) schemaNames.set(e.name.text, exported);
          }
        }
      } else if (
        ts.isExportDeclaration(node) &&
        node.moduleSpecifier &&
        ts.isStringLiteral(node.moduleSpecifier)
      ) {
        addImport(node.moduleSpecifier.text, node.isTypeOnly);
      } else if (ts.isCallExpression(node)) {
        const callee = node.expression;
        if (
          callee.kind === ts.SyntaxKind.ImportKeyword &&
          node.arguments[0] &&
          ts.isStringLiteral(node.arguments[0])
        ) {
          addImport(node.arguments[0].text, false);
        } else if (
          ts.isPropertyAccessExpression(callee) &&
          ["insert", "update", "delete"].includes(callee.name.text) &&
          node.arguments.length === 1
        ) {
          const arg = node.arguments[0];
          const table = arg && ts.isIdentifier(arg) ? schemaNames.get(arg.text) : undefined;
          if (table) {
            writes.push({
              file: file.path,
              table: OWNED_TABLES[table] as string,
              line: lineOf(sf, node),
              how: `.${callee.name.text}(${arg?.getText(sf)})`,
            });
          }
        }
      } else if (ts.isTemplateLiteral(node)) {
        for (const m of templateText(node, schemaNames).matchAll(RAW_WRITE)) {
          const table = (m[1] ?? "").toLowerCase();
          if (OWNED_SQL.has(table)) {
            writes.push({ file: file.path, table, line: lineOf(sf, node), how: m[0] });
          }
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
    out.set(file.path, { imports, writes });
  }
  return out;
}

const layerOf = (p: string): string | null => {
  const m = /^server\/([^/]+)\//.exec(p);
  return m ? (m[1] as string) : null;
};

/** Layers a layer must not import at run time (type-only imports of ports are fine). */
const FORBIDDEN: Record<string, string[]> = {
  protocol: ["api", "auth", "cloud", "db", "domain", "jobs"],
  db: ["api", "auth", "cloud", "domain", "jobs", "protocol"],
  domain: ["api", "cloud", "jobs"],
  auth: ["api", "cloud", "jobs"],
  cloud: ["api", "jobs", "auth"],
};

export type Violation = string;

/** Every broken rule, one line each: who writes what, who imports whom, which modules loop. */
export function check(files: SourceFile[]): Violation[] {
  const parsed = parse(files);
  const out: Violation[] = [];
  const writers = new Set<string>();
  for (const [file, p] of parsed) {
    if (p.writes.length > 0 && file.startsWith("server/domain/")) writers.add(file);
    for (const w of p.writes) {
      if (!file.startsWith("server/domain/")) {
        out.push(`${file}:${w.line} writes ${w.table} (${w.how}); only server/domain/ may`);
      } else if (
        w.table === "audit_events" &&
        file !== "server/domain/audit.ts" &&
        !(file in SET_BASED_AUDIT)
      ) {
        out.push(`${file}:${w.line} writes audit_events by hand (${w.how}); use audit()`);
      }
    }
  }
  for (const [file, p] of parsed) {
    const from = layerOf(file);
    for (const imp of p.imports) {
      if (imp.typeOnly) continue;
      const to = layerOf(imp.to);
      if (from && to && FORBIDDEN[from]?.includes(to)) {
        out.push(`${file} imports ${imp.to}: ${from}/ must not import ${to}/`);
      }
      if (from === "cloud" && writers.has(imp.to)) {
        out.push(`${file} imports ${imp.to}, which writes the database; drivers only report`);
      }
    }
  }
  for (const cycle of cycles(parsed)) out.push(`import cycle: ${cycle.join(" → ")}`);
  return out;
}

/** Run-time import cycles among server/ modules (Tarjan's strongly connected components). */
export function cycles(parsed: Map<string, Parsed>): string[][] {
  const edges = new Map<string, string[]>();
  for (const [file, p] of parsed) {
    if (!file.startsWith("server/")) continue;
    edges.set(
      file,
      p.imports.filter((i) => !i.typeOnly && i.to.startsWith("server/")).map((i) => i.to),
    );
  }
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const found: string[][] = [];
  const strong = (v: string) => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    on.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!idx.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (on.has(w)) {
        low.set(v, Math.min(low.get(v) as number, idx.get(w) as number));
      }
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop() as string;
        on.delete(w);
        comp.push(w);
      } while (w !== v);
      const selfLoop = (edges.get(v) ?? []).includes(v);
      if (comp.length > 1 || selfLoop) found.push(comp.sort());
    }
  };
  for (const v of edges.keys()) if (!idx.has(v)) strong(v);
  return found;
}

// bench/ seeds its fixtures straight into the tables, as tests do.
const SKIP_DIRS = new Set(["node_modules", ".next", "tests", "e2e", "drizzle", "public", "bench"]);

/** The repository's own sources: server/, app/, cli/, scripts/ and root files; no tests. */
export function repositorySources(root: string): SourceFile[] {
  const out: SourceFile[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = dir ? `${dir}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        if (!SKIP_DIRS.has(entry.name) && !entry.name.startsWith(".") && rel !== "agent") {
          walk(rel);
        }
      } else if (/\.tsx?$/.test(entry.name) && !/\.test\.tsx?$/.test(entry.name)) {
        out.push({ path: rel, text: readFileSync(path.join(root, rel), "utf8") });
      }
    }
  };
  walk("");
  return out;
}
