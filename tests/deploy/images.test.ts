import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { dockerfile } from "./dockerfile";

/**
 * The agent and research images and the script that builds them, without a Docker engine (none
 * runs where the tests do): the Dockerfiles parsed and held against the repository, the script run
 * with a stand-in `docker` that records what it was asked to do.
 */
const root = path.resolve(import.meta.dirname, "../..");
const read = (p: string) => readFileSync(path.join(root, p), "utf8");
const version = (JSON.parse(read("package.json")) as { version: string }).version;

describe("agent image (agent/packaging/Dockerfile)", () => {
  const ins = dockerfile("agent/packaging/Dockerfile");

  it("copies the agent bundle from where `npm run build -w agent` writes it, to where the bootstrap copies it from", () => {
    const build = read("agent/scripts/build.mjs");
    expect(build).toContain('join(root, "dist", "lablink-agent.mjs")');
    const copies = ins.filter((i) => i.op === "COPY" && !i.args.startsWith("--from"));
    expect(copies.map((c) => c.args)).toContain(
      "agent/dist/lablink-agent.mjs /opt/lablink/lablink-agent.mjs",
    );
    // terraform/user-data.sh.tftpl copies node and the bundle out of the image by these paths.
    const bootstrap = read("terraform/user-data.sh.tftpl");
    expect(bootstrap).toContain('docker cp "$CID:/usr/local/bin/node"');
    expect(bootstrap).toContain('docker cp "$CID:/opt/lablink/lablink-agent.mjs"');
    expect(ins.some((i) => i.op === "COPY" && i.args.endsWith("/usr/local/bin/node"))).toBe(true);
  });

  it("is a CUDA image with Node 22, and its entrypoint runs the bundle with node", () => {
    const from = ins.filter((i) => i.op === "FROM").map((i) => i.args);
    expect(from.some((f) => /^node:22-/.test(f))).toBe(true);
    expect(from.at(-1)).toMatch(/^nvidia\/cuda:/);
    const entry = JSON.parse(ins.find((i) => i.op === "ENTRYPOINT")?.args ?? "null") as string[];
    expect(entry[0]).toBe("/usr/local/bin/node");
    expect(entry.at(-1)).toBe("/opt/lablink/lablink-agent.mjs");
  });
});

describe("research image (agent/packaging/research.Dockerfile)", () => {
  const ins = dockerfile("agent/packaging/research.Dockerfile");

  it("is a CUDA runtime with bash and a /workspace, idle until the bootstrap execs into it", () => {
    expect(ins.filter((i) => i.op === "FROM").at(-1)?.args).toMatch(
      /^nvidia\/cuda:[\d.]+-.*runtime/,
    );
    const run = ins
      .filter((i) => i.op === "RUN")
      .map((i) => i.args)
      .join(" ");
    for (const pkg of ["bash", "git", "python3"]) expect(run).toMatch(new RegExp(`\\b${pkg}\\b`));
    expect(ins.find((i) => i.op === "WORKDIR")?.args).toBe("/workspace");
    // The bootstrap mounts the workspace volume there and runs `sleep infinity` in it.
    expect(read("terraform/user-data.sh.tftpl")).toContain("-v lablink-workspace:/workspace");
    expect(JSON.parse(ins.find((i) => i.op === "CMD")?.args ?? "null")).toEqual([
      "sleep",
      "infinity",
    ]);
    // Its build context (agent/packaging) holds nothing it would need to COPY.
    expect(ins.filter((i) => i.op === "COPY" || i.op === "ADD")).toEqual([]);
  });
});

describe("scripts/build-images.sh", () => {
  function run(args: string[]) {
    const bin = mkdtempSync(path.join(tmpdir(), "lablink-docker-"));
    const log = path.join(bin, "calls");
    writeFileSync(
      path.join(bin, "docker"),
      `#!/usr/bin/env bash\nprintf '%s\\n' "$*" >> ${JSON.stringify(log)}\n`,
    );
    chmodSync(path.join(bin, "docker"), 0o755);
    try {
      const r = spawnSync("bash", ["scripts/build-images.sh", ...args], {
        cwd: root,
        env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
        encoding: "utf8",
      });
      const calls = existsSync(log) ? readFileSync(log, "utf8").trim().split("\n") : [];
      return { code: r.status, out: r.stdout, err: r.stderr, calls };
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  }

  it("builds the server, agent and research images tagged with package.json's version, pushing only with --push", () => {
    const bundle = path.join(root, "agent/dist/lablink-agent.mjs");
    if (!existsSync(bundle)) {
      const b = spawnSync(process.execPath, ["agent/scripts/build.mjs"], { cwd: root });
      expect(b.status).toBe(0);
    }
    const reg = "123456789012.dkr.ecr.us-east-1.amazonaws.com/lablink";
    const built = run([`${reg}/`, "--no-agent-build"]);
    expect(built.err).toBe("");
    expect(built.code).toBe(0);
    expect(built.calls).toEqual([
      `build -f Dockerfile -t ${reg}/lablink-server:${version} .`,
      `build -f agent/packaging/Dockerfile -t ${reg}/lablink-agent:${version} .`,
      `build -f agent/packaging/research.Dockerfile -t ${reg}/lablink-research:${version} agent/packaging`,
    ]);
    // The line an admin pastes into the server's settings.
    expect(built.out).toContain(`LABLINK_AGENT_IMAGE=${reg}/lablink-agent:${version}\n`);

    const pushed = run([reg, "--push", "--no-agent-build"]);
    expect(pushed.code).toBe(0);
    expect(pushed.calls.slice(3)).toEqual([
      `push ${reg}/lablink-server:${version}`,
      `push ${reg}/lablink-agent:${version}`,
      `push ${reg}/lablink-research:${version}`,
    ]);
  });

  it("refuses to run without a registry, and never tags latest", () => {
    const none = run([]);
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/usage: scripts\/build-images\.sh <registry>/);
    expect(none.calls).toEqual([]);
    expect(read("scripts/build-images.sh")).not.toMatch(/:latest\b/);
  });
});
