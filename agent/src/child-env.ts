/**
 * The environment of a child process, built from scratch: nothing of the agent's own (its token)
 * leaks into nvidia-smi, start-host or anything else it runs. Typed loosely on purpose: the app's
 * type check, which sees Next's stricter ProcessEnv, compiles these files too.
 */
export function childEnv(vars: Record<string, string | undefined>): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(vars).filter(([, v]) => v !== undefined),
  ) as unknown as NodeJS.ProcessEnv;
}
