import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { ENV_NAMES, parseEnv } from "../../server/env";
import { dockerfile } from "./dockerfile";

/**
 * The deployment files are checked here without a Docker engine or systemd (neither runs on the
 * machines the tests run on): parsed, and held against what the code really has — npm scripts,
 * environment variables, the health route, the web server's port.
 */
const root = path.resolve(import.meta.dirname, "../..");
const read = (p: string) => readFileSync(path.join(root, p), "utf8");
const scripts = (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts;
const defaultPort = parseEnv({}).PORT;

/** `npm run <script>` in a command (string or exec form) must name a script that exists. */
function npmScripts(command: string | string[]): string[] {
  const words = Array.isArray(command) ? command : command.split(/\s+/);
  const found: string[] = [];
  for (let i = 0; i < words.length - 2; i++) {
    if (/(^|\/)npm$/.test(words[i] as string) && words[i + 1] === "run")
      found.push(words[i + 2] as string);
  }
  return found;
}

describe("server Dockerfile", () => {
  const ins = dockerfile("Dockerfile");
  const stages = ins.filter((i) => i.op === "FROM");
  const last = ins.slice(ins.lastIndexOf(stages.at(-1) as { op: string; args: string }));

  it("is multi-stage, on a Node LTS the app supports, and runs as a user that is not root", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const names = stages.map((s) => /\bAS\s+(\S+)/i.exec(s.args)?.[1]);
    // Stages built on an earlier stage inherit its base image.
    const bases = stages
      .map((s) => s.args.split(/\s+/)[0] as string)
      .filter((b) => !names.includes(b));
    expect(bases.length).toBeGreaterThan(0);
    for (const b of bases) expect(b).toMatch(/^node:(22|24)-/);
    const user = last.filter((i) => i.op === "USER").at(-1);
    expect(user?.args).toBeTruthy();
    expect(user?.args).not.toMatch(/^(root|0)(:|$)/);
  });

  it("checks its health on the route that exists, on the port the server listens on", () => {
    const health = last.find((i) => i.op === "HEALTHCHECK");
    expect(health?.args).toContain("/api/health");
    expect(existsSync(path.join(root, "app/api/health/route.ts"))).toBe(true);
    const env = last
      .filter((i) => i.op === "ENV")
      .map((i) => i.args)
      .join(" ");
    expect(env).toContain(`PORT=${defaultPort}`);
    expect(last.find((i) => i.op === "EXPOSE")?.args).toBe(String(defaultPort));
  });

  it("starts the web app by default through an npm script that exists, and sets only known variables", () => {
    const cmd = JSON.parse(last.find((i) => i.op === "CMD")?.args ?? "[]") as string[];
    expect(npmScripts(cmd)).toEqual(["web"]);
    for (const s of npmScripts(cmd)) expect(scripts[s]).toBeDefined();
    const names = last
      .filter((i) => i.op === "ENV")
      .flatMap((i) => [...i.args.matchAll(/([A-Z_][A-Z0-9_]*)=/g)].map((m) => m[1]));
    for (const n of names) expect([...ENV_NAMES, "NEXT_TELEMETRY_DISABLED"]).toContain(n);
  });

  it("leaves secrets, build output and local data out of the build context", () => {
    const ignored = read(".dockerignore").split("\n");
    for (const p of ["node_modules", ".next", ".data", ".env", "*.tfstate", "*.pem"])
      expect(ignored).toContain(p);
  });
});

describe("compose.yaml", () => {
  const compose = parse(read("compose.yaml"), { merge: true }) as {
    services: Record<
      string,
      {
        command?: string[];
        environment?: Record<string, string>;
        depends_on?: Record<string, { condition: string }>;
        expose?: string[];
        volumes?: string[];
        image?: string;
      }
    >;
  };
  const s = compose.services;

  it("runs Postgres with a volume, migrations once, then web and worker, and Caddy in front", () => {
    expect(Object.keys(s).sort()).toEqual(["caddy", "migrate", "postgres", "web", "worker"]);
    expect(s.postgres?.volumes?.some((v) => v.endsWith(":/var/lib/postgresql/data"))).toBe(true);
    expect(s.migrate?.depends_on?.postgres?.condition).toBe("service_healthy");
    for (const name of ["web", "worker"])
      expect(s[name]?.depends_on?.migrate?.condition).toBe("service_completed_successfully");
    expect(existsSync(path.join(root, "deploy/Caddyfile"))).toBe(true);
    expect(read("deploy/Caddyfile")).toMatch(/reverse_proxy web:(\d+)/);
  });

  it("runs npm scripts that exist, on the port Caddy proxies to", () => {
    expect(npmScripts(s.migrate?.command ?? [])).toEqual(["db:migrate"]);
    expect(npmScripts(s.web?.command ?? [])).toEqual(["web"]);
    expect(npmScripts(s.worker?.command ?? [])).toEqual(["worker"]);
    for (const c of ["migrate", "web", "worker"])
      for (const script of npmScripts(s[c]?.command ?? [])) expect(scripts[script]).toBeDefined();
    const port = /reverse_proxy web:(\d+)/.exec(read("deploy/Caddyfile"))?.[1];
    expect(s.web?.environment?.PORT).toBe(port);
    expect(s.web?.expose).toContain(port);
  });

  it("sets only variables LabLink reads, and values it accepts", () => {
    for (const c of ["migrate", "web", "worker"]) {
      const env = s[c]?.environment ?? {};
      for (const name of Object.keys(env)) expect(ENV_NAMES).toContain(name);
      // Placeholders as compose would fill them in.
      const filled = Object.fromEntries(
        Object.entries(env).map(([k, v]) => [k, String(v).replace(/\$\{[^}]+\}/g, "x")]),
      );
      expect(() => parseEnv(filled)).not.toThrow();
    }
  });

  it("has every variable of the example settings file known to LabLink", () => {
    const example = read("deploy/lablink.env.example");
    const names = [...example.matchAll(/^#?\s*([A-Z][A-Z0-9_]+)=/gm)].map((m) => m[1]);
    expect(names.length).toBeGreaterThan(5);
    for (const n of names) expect([...ENV_NAMES, "POSTGRES_PASSWORD"]).toContain(n);
  });
});

describe("systemd units", () => {
  const unit = (name: string) => {
    const text = read(`deploy/systemd/${name}.service`);
    const get = (key: string) =>
      [...text.matchAll(new RegExp(`^${key}=(.*)$`, "gm"))].map((m) => m[1] as string);
    return { text, get };
  };

  it("start web and worker after the migrations, as an unprivileged user, through npm scripts that exist", () => {
    for (const [name, script] of [
      ["lablink-web", "web"],
      ["lablink-worker", "worker"],
      ["lablink-migrate", "db:migrate"],
    ] as const) {
      const u = unit(name);
      expect(npmScripts(u.get("ExecStart")[0] ?? "")).toEqual([script]);
      expect(scripts[script]).toBeDefined();
      expect(u.get("User")[0]).toBe("lablink");
      expect(u.get("NoNewPrivileges")[0]).toBe("true");
      if (name !== "lablink-migrate") {
        expect(u.get("Requires")[0]).toBe("lablink-migrate.service");
        expect(u.get("KillSignal")[0]).toBe("SIGTERM");
      }
    }
  });
});
