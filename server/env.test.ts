import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { EnvError, listenHost, parseEnv } from "./env";

describe("configuration", () => {
  it("applies defaults", () => {
    const e = parseEnv({});
    expect(e).toMatchObject({
      PORT: 3000,
      LABLINK_HEARTBEAT_INTERVAL_S: 15,
      LABLINK_DEV_LOGIN: false,
    });
    expect(listenHost(e)).toBe("0.0.0.0");
    expect(listenHost(parseEnv({ LABLINK_DEV_LOGIN: "true" }))).toBe("127.0.0.1");
  });

  it("serves worker metrics only when a port is set, on loopback unless told otherwise", () => {
    expect(parseEnv({}).LABLINK_WORKER_METRICS_PORT).toBeUndefined();
    expect(parseEnv({ LABLINK_WORKER_METRICS_PORT: "9464" })).toMatchObject({
      LABLINK_WORKER_METRICS_PORT: 9464,
      LABLINK_WORKER_METRICS_HOST: "127.0.0.1",
    });
    expect(() => parseEnv({ LABLINK_WORKER_METRICS_PORT: "99999" })).toThrow(
      /LABLINK_WORKER_METRICS_PORT/,
    );
  });

  it("treats an empty variable as unset", () => {
    const e = parseEnv({ DATABASE_URL: "", PORT: "" });
    expect(e.DATABASE_URL).toBeUndefined();
    expect(e.PORT).toBe(3000);
  });

  it("names each bad variable and what is wrong", () => {
    let err: unknown;
    try {
      parseEnv({ PORT: "eighty", DATABASE_URL: "mysql://x", AUTH_SECRET: "short" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(EnvError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/PORT: /);
    expect(msg).toMatch(/DATABASE_URL: must be a postgres:\/\/ or postgresql:\/\/ URL/);
    expect(msg).toMatch(/AUTH_SECRET: must be at least 32 characters/);
  });

  it("refuses development sign-in with an external public URL", () => {
    expect(() =>
      parseEnv({ LABLINK_DEV_LOGIN: "true", LABLINK_PUBLIC_URL: "https://lablink.example.edu" }),
    ).toThrow(/LABLINK_DEV_LOGIN: development sign-in .* cannot be on while LABLINK_PUBLIC_URL/);
    expect(() =>
      parseEnv({ LABLINK_DEV_LOGIN: "true", LABLINK_PUBLIC_URL: "http://localhost:3000" }),
    ).not.toThrow();
  });

  it("refuses email sign-in links without a public URL to build them from", () => {
    const smtp = { LABLINK_SMTP_URL: "smtp://mail.example.edu", LABLINK_EMAIL_FROM: "a@b.edu" };
    expect(() => parseEnv(smtp)).toThrow(/LABLINK_PUBLIC_URL: is required with LABLINK_SMTP_URL/);
    expect(() =>
      parseEnv({ ...smtp, LABLINK_PUBLIC_URL: "https://lablink.example.edu" }),
    ).not.toThrow();
  });

  it("reads which proxies to trust, and refuses what is neither a switch, a count nor addresses", () => {
    expect(parseEnv({}).LABLINK_TRUST_PROXY).toEqual({ kind: "none" });
    expect(parseEnv({ LABLINK_TRUST_PROXY: "true" }).LABLINK_TRUST_PROXY).toEqual({
      kind: "hops",
      hops: 1,
    });
    expect(parseEnv({ LABLINK_TRUST_PROXY: "10.0.0.0/8" }).LABLINK_TRUST_PROXY).toEqual({
      kind: "list",
      entries: ["10.0.0.0/8"],
    });
    expect(() => parseEnv({ LABLINK_TRUST_PROXY: "yes please" })).toThrow(
      /LABLINK_TRUST_PROXY: "yes" is not an IP address/,
    );
  });

  it("refuses development sign-in on a non-loopback listen address", () => {
    expect(() => parseEnv({ LABLINK_DEV_LOGIN: "true", HOST: "0.0.0.0" })).toThrow(
      /cannot be on while the server listens on 0.0.0.0/,
    );
    expect(() => parseEnv({ LABLINK_DEV_LOGIN: "true", HOST: "127.0.0.1" })).not.toThrow();
  });

  it("configures provisioning with safe defaults and refuses an S3 backend without a bucket", () => {
    const e = parseEnv({});
    expect(e).toMatchObject({
      LABLINK_TERRAFORM_BIN: "terraform",
      LABLINK_TERRAFORM_BACKEND: "local",
      LABLINK_RECONCILE_INTERVAL_S: 60,
      LABLINK_RECONCILE_ORPHANS: "report",
      LABLINK_OPERATION_LEASE_S: 30,
    });
    expect(() => parseEnv({ LABLINK_TERRAFORM_BACKEND: "s3" })).toThrow(
      /LABLINK_TERRAFORM_S3_BUCKET: is required when LABLINK_TERRAFORM_BACKEND=s3/,
    );
    expect(() => parseEnv({ LABLINK_RECONCILE_ORPHANS: "delete" })).toThrow(
      /LABLINK_RECONCILE_ORPHANS/,
    );
  });
});

describe("web process flags", () => {
  it("`npm run web` starts Node with the same flags as `npm start` (server/runtime-flags.ts)", async () => {
    const { WEB_NODE_FLAGS } = await import("./runtime-flags");
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
    const web: string = pkg.scripts.web;
    expect(WEB_NODE_FLAGS.length).toBeGreaterThan(0);
    for (const flag of WEB_NODE_FLAGS) expect(web.split(" ")).toContain(flag);
    // The built web process (dist/web.mjs, from server/web.ts), not the TypeScript through tsx.
    expect(web).toMatch(/run-built\.mjs web$/);
    expect(web).not.toContain("tsx");
  });
});
