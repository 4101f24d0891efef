import { TRPCError } from "@trpc/server";

/**
 * Limits on what any procedure's input may contain, checked on the raw (superjson-decoded) input
 * before any schema sees it (server/api/trpc.ts runs this for every procedure). The schemas say
 * what each field means; this says what no field may ever be, so that nothing a caller sends can
 * reach Postgres as a value it refuses (a NUL byte, a lone surrogate, a year it cannot store) or
 * cost the server more than the body-size limit already allows.
 */
export const INPUT_LIMITS = {
  /** The longest field any schema accepts is an SSH public key (16 KiB); log lines are 4 KiB. */
  maxStringLength: 65_536,
  /** Object keys are field names: none is longer than a few dozen characters. */
  maxKeyLength: 200,
  /** The deepest legitimate input (heartbeat backlog → GPU reading → value) is 5 levels. */
  maxDepth: 16,
  /** The longest array any schema accepts is a batch of 500 log lines (LOG_BATCH_MAX). */
  maxArrayLength: 1_000,
  /** The widest object any schema declares has about a dozen fields. */
  maxKeys: 100,
  /** Every value, all levels together: a full log batch is about 3,000. */
  maxValues: 50_000,
  /** Postgres `timestamptz` stores years 4713 BC to 294276 AD; ISO 8601 and people use 1–9999. */
  minDate: Date.UTC(1, 0, 1),
  maxDate: Date.UTC(9999, 11, 31, 23, 59, 59, 999),
} as const;

/**
 * The answer to an input that is JSON but that superjson cannot decode (unknown type annotations,
 * paths into nothing), where no transport made it a 400 already (a direct caller).
 */
export function undecodableInput(cause: unknown): TRPCError {
  return new TRPCError({
    code: "BAD_REQUEST",
    message: "The input could not be decoded (superjson format).",
    cause,
  });
}

/** A procedure's exceptions to the guard (its tRPC `meta.inputGuard`). */
export type InputGuardOptions = {
  /**
   * Fields that may hold NUL characters because the domain replaces them before storing
   * (`lines.*.message`: `*` for any array index). Everywhere else a NUL is refused.
   */
  nulAllowedIn?: readonly string[];
};

const pattern = (path: readonly (string | number)[]) =>
  path.map((p) => (typeof p === "number" ? "*" : p)).join(".");

export type InputProblem = { path: (string | number)[]; message: string };

/** The cause of a 400 from the guard; the error formatter lists it in `fieldErrors`. */
export class InputProblemError extends Error {
  constructor(readonly problem: InputProblem) {
    super(`${fieldName(problem.path)} ${problem.message}.`);
    this.name = "InputProblemError";
  }
}

// A high surrogate not followed by a low one, or a low one not preceded by a high one.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function stringProblem(s: string, max: number): string | null {
  if (s.length > max) return `is too long (at most ${max} characters)`;
  if (s.includes("\u0000")) return "must not contain NUL characters";
  if (LONE_SURROGATE.test(s)) return "is not valid Unicode text (lone surrogate)";
  return null;
}

/**
 * The first thing in `input` that no procedure accepts, with its path, or null. Walks without
 * recursion, so that a deeply nested input cannot overflow the stack before it is refused.
 */
export function findInputProblem(
  input: unknown,
  options: InputGuardOptions = {},
): InputProblem | null {
  const L = INPUT_LIMITS;
  const nulAllowed = new Set(options.nulAllowedIn ?? []);
  const stack: { value: unknown; path: (string | number)[] }[] = [{ value: input, path: [] }];
  let seen = 0;
  while (stack.length > 0) {
    const { value, path } = stack.pop() as { value: unknown; path: (string | number)[] };
    const problem = (message: string) => ({ path, message });
    if (++seen > L.maxValues) return problem(`has too many values (at most ${L.maxValues})`);
    if (value === null || value === undefined || typeof value === "boolean") continue;
    if (typeof value === "string") {
      const nul = nulAllowed.size > 0 && nulAllowed.has(pattern(path));
      const p = stringProblem(nul ? value.replaceAll("\u0000", "") : value, L.maxStringLength);
      if (p) return problem(p);
      continue;
    }
    if (typeof value === "number") {
      if (!Number.isFinite(value)) return problem("must be a finite number");
      continue;
    }
    if (typeof value !== "object") return problem(`must not be a ${typeof value}`);
    if (value instanceof Date) {
      const ms = value.getTime();
      if (Number.isNaN(ms)) return problem("is not a valid date");
      if (ms < L.minDate || ms > L.maxDate) return problem("must be a date in the years 1 to 9999");
      continue;
    }
    if (path.length >= L.maxDepth) return problem(`is nested too deeply (at most ${L.maxDepth})`);
    if (Array.isArray(value)) {
      if (value.length > L.maxArrayLength) {
        return problem(`has too many items (at most ${L.maxArrayLength})`);
      }
      for (let i = value.length - 1; i >= 0; i--)
        stack.push({ value: value[i], path: [...path, i] });
      continue;
    }
    // superjson also decodes Map, Set, RegExp, Error, URL, BigInt...: no procedure takes them.
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return problem("has an unsupported type");
    const keys = Object.keys(value);
    if (keys.length > L.maxKeys) return problem(`has too many fields (at most ${L.maxKeys})`);
    for (const key of keys) {
      // Named by its parent: the key itself may be unprintable.
      if (key === "__proto__") return problem('has a field named "__proto__"');
      const p = stringProblem(key, L.maxKeyLength);
      if (p) return problem(`has a field name that ${p}`);
    }
    for (let i = keys.length - 1; i >= 0; i--) {
      const key = keys[i] as string;
      stack.push({ value: (value as Record<string, unknown>)[key], path: [...path, key] });
    }
  }
  return null;
}

/** "fleetId", "lines.3.message", or "input" for the input itself: how errors name a field. */
export function fieldName(path: readonly (string | number)[]): string {
  return path.length === 0 ? "input" : path.join(".");
}
