import path from "node:path";
import { describe, expect, it } from "vitest";
import { check, repositorySources, type SourceFile } from "./layers";

const root = path.resolve(import.meta.dirname, "../..");

describe("layers (docs/architecture.md)", () => {
  it("the repository keeps the layer, writer and cycle rules", () => {
    expect(check(repositorySources(root))).toEqual([]);
  });
});

const schema = {
  path: "server/db/schema/index.ts",
  text: "export const vms = {}; export const fleets = {}; export const auditEvents = {};",
};
const vmState = {
  path: "server/domain/vm-state.ts",
  text: 'import { vms } from "../db/schema";\nexport const transition = (db: any) => db.update(vms).set({});',
};
const run = (...files: SourceFile[]) => check([schema, vmState, ...files]);

describe("the layer checker finds", () => {
  it("a driver that writes vms with Drizzle", () => {
    expect(
      run({
        path: "server/cloud/x/driver.ts",
        text: 'import { vms as v } from "../../db/schema";\nexport const f = (db: any) => db.insert(v).values({});',
      }),
    ).toEqual(["server/cloud/x/driver.ts:2 writes vms (.insert(v)); only server/domain/ may"]);
  });

  it("a job that writes fleets in raw SQL, with the table written out or interpolated", () => {
    expect(
      run({
        path: "server/jobs/j.ts",
        text: [
          'import { fleets } from "../db/schema";',
          "const a = sql`UPDATE fleets SET status = 1`;",
          `const b = sql\`DELETE FROM $\{fleets} WHERE true\`;`,
        ].join("\n"),
      }),
    ).toEqual([
      "server/jobs/j.ts:2 writes fleets (UPDATE fleets); only server/domain/ may",
      "server/jobs/j.ts:3 writes fleets (DELETE FROM fleets); only server/domain/ may",
    ]);
  });

  it("a hand-written audit insert in domain beside audit()", () => {
    expect(
      run({
        path: "server/domain/agents.ts",
        text: 'import { auditEvents } from "../db/schema";\nexport const f = (db: any) => db.insert(auditEvents).values({});',
      }),
    ).toEqual([
      "server/domain/agents.ts:2 writes audit_events by hand (.insert(auditEvents)); use audit()",
    ]);
  });

  it("domain importing api/ at run time, but not a type-only import of a port", () => {
    expect(
      run(
        { path: "server/api/p.ts", text: "export const v = 1; export type T = number;" },
        { path: "server/cloud/driver.ts", text: "export interface FleetDriver {}" },
        {
          path: "server/domain/a.ts",
          text: 'import { v } from "../api/p";\nimport type { FleetDriver } from "../cloud/driver";\nimport { type T } from "../api/p";',
        },
      ),
    ).toEqual(["server/domain/a.ts imports server/api/p.ts: domain/ must not import api/"]);
  });

  it("a driver importing a domain module that writes (transition())", () => {
    expect(
      run({
        path: "server/cloud/local/driver.ts",
        text: 'import { transition } from "../../domain/vm-state";',
      }),
    ).toEqual([
      "server/cloud/local/driver.ts imports server/domain/vm-state.ts, which writes the database; drivers only report",
    ]);
  });

  it("an import cycle, however long, and not one made only of type imports", () => {
    expect(
      run(
        { path: "server/domain/a.ts", text: 'import { b } from "./b";\nexport const a = 1;' },
        { path: "server/domain/b.ts", text: 'import { c } from "./c";\nexport const b = 1;' },
        { path: "server/domain/c.ts", text: 'import { a } from "./a";\nexport const c = 1;' },
        { path: "server/domain/d.ts", text: 'import type { e } from "./e";\nexport const d = 1;' },
        { path: "server/domain/e.ts", text: 'import { d } from "./d";\nexport const e = 1;' },
      ),
    ).toEqual(["import cycle: server/domain/a.ts → server/domain/b.ts → server/domain/c.ts"]);
  });
});
