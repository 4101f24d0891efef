/** True when `e` (or an error in its `cause` chain) is Postgres's unique violation of `constraint`. */
export function isUniqueViolation(e: unknown, constraint: string): boolean {
  for (
    let err = e as { code?: string; constraint_name?: string; cause?: unknown } | undefined;
    err;
    err = err.cause as typeof err
  ) {
    if (err.code === "23505" && err.constraint_name === constraint) return true;
  }
  return false;
}
