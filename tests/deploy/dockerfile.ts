import { readFileSync } from "node:fs";
import path from "node:path";

export const repoRoot = path.resolve(import.meta.dirname, "../..");

export type Instruction = { op: string; args: string };

/** A Dockerfile's instructions, with continuation lines joined and comments dropped. */
export function dockerfile(p: string): Instruction[] {
  return readFileSync(path.join(repoRoot, p), "utf8")
    .split("\n")
    .filter((l) => !/^\s*#/.test(l))
    .join("\n")
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const [op = "", ...rest] = l.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(" ") };
    });
}

/** The instructions of one stage (`FROM ... AS <name>`, or the last stage for "last"). */
export function stage(ins: Instruction[], name: string): Instruction[] {
  const starts = ins.flatMap((i, n) => (i.op === "FROM" ? [n] : []));
  const at =
    name === "last"
      ? (starts.at(-1) ?? 0)
      : (starts.find((n) => new RegExp(`\\bAS\\s+${name}$`, "i").test(ins[n]?.args ?? "")) ?? -1);
  if (at < 0) throw new Error(`no stage ${name}`);
  const next = starts.find((n) => n > at) ?? ins.length;
  return ins.slice(at, next);
}
