import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { buildProgram } from "../../cli/lablink";

/**
 * docs/deploy-aws.md's commands, held against the repository: each shell line runs a program the
 * guide may use, and every npm script, `lablink` command and option, build-script option, compose
 * service and file it names exists. A renamed script or command breaks this test, not the guide's
 * reader.
 */
const root = path.resolve(import.meta.dirname, "../..");
const read = (p: string) => readFileSync(path.join(root, p), "utf8");
const doc = read("docs/deploy-aws.md");
const scripts = (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts;
const services = Object.keys(
  (parse(read("compose.yaml")) as { services: Record<string, unknown> }).services,
);

/** Shell lines of the ```sh blocks, continuation lines joined, comments dropped. */
function shellLines(markdown: string): string[] {
  const blocks = [...markdown.matchAll(/```(?:sh|bash|shell)\n([\s\S]*?)```/g)].map(
    (m) => m[1] as string,
  );
  return blocks
    .flatMap((b) => b.replace(/\\\n/g, " ").split("\n"))
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
}

/** Words of a command line, double quotes kept together, redirections dropped. */
function words(line: string): string[] {
  const out: string[] = [];
  for (const m of line.matchAll(/"([^"]*)"|(\S+)/g)) out.push((m[1] ?? m[2]) as string);
  const cut = out.findIndex((w) => w === ">" || w === "<" || w === "|");
  return cut === -1 ? out : out.slice(0, cut);
}

const program = buildProgram({ log: () => {}, err: () => {} });

/** Problems with `lablink <args>`: unknown commands or options. */
function lablinkProblems(args: string[]): string[] {
  let cmd: Command = program;
  let i = 0;
  while (i < args.length && !(args[i] as string).startsWith("-")) {
    const next = cmd.commands.find((c) => c.name() === args[i]);
    if (!next) break;
    cmd = next;
    i++;
  }
  const problems: string[] = [];
  if (cmd === program || cmd.commands.length > 0)
    problems.push(`lablink ${args.join(" ")}: not a complete command`);
  const known = new Set(
    [...cmd.options, ...program.options].flatMap((o) => [o.long, o.short]).filter(Boolean),
  );
  for (const w of args.slice(i)) {
    if (w.startsWith("-") && !known.has(w.split("=")[0] as string))
      problems.push(`lablink ${cmd.name()}: no option ${w}`);
  }
  return problems;
}

function problems(line: string): string[] {
  const w = words(line);
  const [first, ...rest] = w;
  switch (first) {
    case "npm":
      if (rest[0] === "ci") return [];
      if (rest[0] === "run") return scripts[rest[1] as string] ? [] : [`no npm script ${rest[1]}`];
      return [`npm ${rest[0]}: not a command the guide uses`];
    case "npx":
      return rest[0] === "lablink" ? lablinkProblems(rest.slice(1)) : [`npx ${rest[0]}`];
    case "scripts/build-images.sh":
      return rest
        .filter((a) => a.startsWith("-") && !["--push", "--no-agent-build"].includes(a))
        .map((a) => `build-images.sh has no option ${a}`);
    case "cp":
      return existsSync(path.join(root, rest[0] as string)) ? [] : [`no file ${rest[0]}`];
    case "export":
      return /^LABLINK_(URL|TOKEN)=/.test(rest[0] ?? "") ? [] : [`export ${rest[0]}`];
    case "docker": {
      if (rest[0] !== "compose") return ["docker: use docker compose"];
      const sub = rest[1] as string;
      if (!["up", "ps", "build", "run", "exec", "stop", "logs"].includes(sub))
        return [`docker compose ${sub}`];
      const args = rest.slice(2);
      if (sub === "stop")
        return args.filter((s) => !services.includes(s)).map((s) => `no service ${s}`);
      if (sub !== "run" && sub !== "exec") return [];
      const service = args.find((a) => !a.startsWith("-")) as string;
      if (!services.includes(service)) return [`no service ${service}`];
      const inner = args.slice(args.indexOf(service) + 1);
      return inner.length ? problems(inner.join(" ")) : [];
    }
    case "pg_dump":
    case "pg_restore":
      // Run inside the postgres service, against the database compose creates.
      return rest.includes("-U") && rest.includes("lablink") ? [] : [`${first}: user and database`];
    default:
      return [`${first}: not a command the guide may use`];
  }
}

describe("docs/deploy-aws.md", () => {
  const lines = shellLines(doc);

  it("has the deployment's commands: images, start, first fleet, upgrade, backup and restore", () => {
    const all = lines.join("\n");
    for (const needed of [
      "scripts/build-images.sh",
      "docker compose up -d",
      "npx lablink fleet create",
      "docker compose run --rm migrate",
      "pg_dump",
      "pg_restore",
    ])
      expect(all).toContain(needed);
  });

  it("runs only commands that exist, with options that exist", () => {
    expect(lines.length).toBeGreaterThan(10);
    expect(lines.flatMap(problems)).toEqual([]);
  });

  it("links files that exist", () => {
    for (const m of doc.matchAll(/\]\(([^)#]+)\)/g)) {
      const target = m[1] as string;
      if (/^https?:/.test(target)) continue;
      expect(existsSync(path.join(root, "docs", target)), target).toBe(true);
    }
  });

  it("catches a command that does not exist (the checks can fail)", () => {
    expect(problems("npm run no-such-script")).not.toEqual([]);
    expect(problems("npx lablink fleet explode")).not.toEqual([]);
    expect(problems("npx lablink fleet create x --no-such-option")).not.toEqual([]);
    expect(problems("docker compose run --rm nosuch npm run db:migrate")).not.toEqual([]);
    expect(problems("docker compose run --rm web npx lablink config nope")).not.toEqual([]);
  });
});
