import { execRunner, type Runner, which } from "./accounts";

/** Docker object names (what `docker run --name` and `docker volume create` accept). */
export const DOCKER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;

export type ResearchContainerOptions = {
  /** The container the bootstrap starts (`lablink-research`). */
  name: string;
  /** Its workspace volume (`lablink-workspace`). */
  volume: string;
  /** argv of the program that starts a fresh one (written by the bootstrap); null: none. */
  start: string[] | null;
  run?: Runner;
  find?: (name: string) => Promise<string | null>;
};

/** The docker commands that throw the research container and its volume away, in order. */
export function removalArgv(name: string, volume: string): string[][] {
  if (!DOCKER_NAME.test(name) || !DOCKER_NAME.test(volume)) {
    throw new Error("refusing a container or volume name docker would not accept");
  }
  return [
    ["rm", "--force", "--volumes", name],
    ["volume", "rm", "--force", volume],
  ];
}

/** A start script may clone a repository and run the fleet's startup script: allow it time. */
const START_TIMEOUT_MS = 15 * 60_000;

const startRunner: Runner = execRunner(START_TIMEOUT_MS);

/**
 * The research container of a cloud VM: on release it is stopped and removed with its volume, and
 * a fresh one is started for the next holder (nothing of the last holder's work survives in it).
 */
export class ResearchContainer {
  constructor(private readonly o: ResearchContainerOptions) {}

  async reset(): Promise<void> {
    const docker = await (this.o.find ?? which)("docker");
    if (!docker) throw new Error("docker is not installed; cannot replace the research container");
    const run = this.o.run ?? startRunner;
    for (const argv of removalArgv(this.o.name, this.o.volume)) {
      const r = await run(docker, argv);
      // `rm --force` of a missing container exits 0 on current Docker, 1 on old ones.
      if (r.code !== 0 && !/no such (container|volume)/i.test(r.stderr)) {
        throw new Error(
          `docker ${argv[0]} exited with ${r.code}: ${r.stderr.trim().slice(0, 300)}`,
        );
      }
    }
    const [file, ...args] = this.o.start ?? [];
    if (!file) return;
    const r = await run(file, args);
    if (r.code !== 0) {
      throw new Error(`starting a fresh research container failed (${r.code})`);
    }
  }
}
