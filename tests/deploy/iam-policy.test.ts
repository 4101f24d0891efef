import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";

/**
 * docs/iam/lablink-worker-policy.json, the worker's IAM policy, held against what the worker
 * really calls: every EC2 API the server's SDK code sends, and every resource Terraform manages.
 * A new API call or Terraform resource without its permission fails here, not in production.
 */
const root = path.resolve(import.meta.dirname, "../..");
const read = (p: string) => readFileSync(path.join(root, p), "utf8");

type Statement = {
  Sid: string;
  Effect: "Allow" | "Deny";
  Action: string | string[];
  Resource: string | string[];
  Condition?: Record<string, Record<string, unknown>>;
};
const policy = JSON.parse(read("docs/iam/lablink-worker-policy.json")) as {
  Version: string;
  Statement: Statement[];
};
const list = (v: string | string[]) => (Array.isArray(v) ? v : [v]);
const allowing = (action: string) =>
  policy.Statement.filter((s) => s.Effect === "Allow" && list(s.Action).includes(action));

/** What the AWS provider calls for each resource type the module uses (create, read, update, delete). */
const TERRAFORM_ACTIONS: Record<string, string[]> = {
  aws_ami: ["ec2:DescribeImages"],
  aws_instance: [
    "ec2:RunInstances",
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceAttribute",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeInstanceCreditSpecifications",
    "ec2:DescribeVolumes",
    "ec2:DescribeTags",
    "ec2:ModifyInstanceAttribute",
    "ec2:ModifyInstanceMetadataOptions",
    "ec2:CreateTags",
    "ec2:DeleteTags",
    "ec2:TerminateInstances",
  ],
  aws_security_group: [
    "ec2:CreateSecurityGroup",
    "ec2:DescribeSecurityGroups",
    "ec2:DeleteSecurityGroup",
    // The provider removes the default allow-all egress rule of a new group.
    "ec2:RevokeSecurityGroupEgress",
    "ec2:DescribeVpcs",
  ],
  aws_vpc_security_group_egress_rule: [
    "ec2:AuthorizeSecurityGroupEgress",
    "ec2:RevokeSecurityGroupEgress",
    "ec2:DescribeSecurityGroupRules",
    "ec2:ModifySecurityGroupRules",
  ],
  aws_vpc_security_group_ingress_rule: [
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:DescribeSecurityGroupRules",
    "ec2:ModifySecurityGroupRules",
  ],
};

describe("the worker's IAM policy", () => {
  it("is a policy document of Allow statements, each with a Sid", () => {
    expect(policy.Version).toBe("2012-10-17");
    for (const s of policy.Statement) {
      expect(s.Effect).toBe("Allow");
      expect(s.Sid).toMatch(/^[A-Za-z0-9]+$/);
    }
    expect(new Set(policy.Statement.map((s) => s.Sid)).size).toBe(policy.Statement.length);
  });

  it("allows every EC2 call the server's code makes", () => {
    const sources = readdirSync(path.join(root, "server"), { recursive: true, encoding: "utf8" })
      .filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"))
      .map((f) => read(path.join("server", f)))
      .filter((src) => src.includes("@aws-sdk/client-ec2"));
    const calls = new Set<string>();
    for (const src of sources) {
      for (const m of src.matchAll(/\b([A-Z][A-Za-z]+)Command\b/g)) calls.add(m[1] as string);
      for (const m of src.matchAll(/\bpaginate([A-Z][A-Za-z]+)\b/g)) calls.add(m[1] as string);
    }
    expect(calls).toContain("DescribeInstances");
    expect(calls).toContain("TerminateInstances");
    for (const call of calls) expect(allowing(`ec2:${call}`), call).not.toEqual([]);
  });

  it("allows what Terraform needs for every resource and data source in terraform/", () => {
    const types = new Set<string>();
    for (const f of readdirSync(path.join(root, "terraform")).filter((f) => f.endsWith(".tf")))
      for (const m of read(path.join("terraform", f)).matchAll(
        /^(?:resource|data) "([a-z0-9_]+)"/gm,
      ))
        types.add(m[1] as string);
    expect(types.size).toBeGreaterThan(0);
    for (const type of types) {
      const actions = TERRAFORM_ACTIONS[type];
      expect(actions, `${type}: add its API calls here and to the policy`).toBeDefined();
      for (const a of actions ?? []) expect(allowing(a), `${type} needs ${a}`).not.toEqual([]);
    }
    // The AWS provider checks its credentials first.
    expect(allowing("sts:GetCallerIdentity")).not.toEqual([]);
  });

  it("changes and deletes only what LabLink tagged, and creates only what it tags", () => {
    for (const s of policy.Statement) {
      for (const a of list(s.Action)) {
        if (/^ec2:(Describe|Get)/.test(a) || a === "sts:GetCallerIdentity") continue;
        if (!a.startsWith("ec2:")) continue;
        const resources = list(s.Resource);
        // Anything destructive or modifying on instances, volumes and groups needs the fleet tag.
        const tagged =
          s.Condition?.Null?.["ec2:ResourceTag/lablink:fleet"] === "false" ||
          s.Condition?.Null?.["aws:RequestTag/lablink:fleet"] === "false" ||
          s.Condition?.StringEquals?.["ec2:CreateAction"] !== undefined;
        // Resources a call only uses or that carry no tags of their own: a launch attaches the
        // fleet's (tagged) group, and a rule belongs to a group the statement above guards.
        const untaggable =
          a === "ec2:RunInstances"
            ? /:(image|key-pair|network-interface|subnet|security-group)\/\*$/
            : /:(vpc|security-group-rule)\/\*$/;
        const onlyUntaggable = resources.every((r) => untaggable.test(r));
        expect(tagged || onlyUntaggable, `${s.Sid}: ${a} on ${resources.join(", ")}`).toBe(true);
        if (s.Condition?.StringEquals?.["ec2:CreateAction"] === undefined)
          expect(resources, s.Sid).not.toContain("*");
      }
    }
  });

  it("reaches Terraform state only under LabLink's key prefix, and the lock table by name", () => {
    // Work archives have their own statement (below).
    const s3 = policy.Statement.filter(
      (s) => s.Sid !== "WorkArchiveObjects" && list(s.Action).some((a) => a.startsWith("s3:")),
    );
    const objects = s3.flatMap((s) => list(s.Resource)).filter((r) => r.includes("/"));
    expect(objects).toEqual(["arn:aws:s3:::LABLINK_STATE_BUCKET/lablink/fleets/*"]);
    // The driver's S3 backend key for each fleet's state.
    expect(read("server/cloud/terraform/driver.ts")).toMatch(
      /`lablink\/fleets\/\$\{fleet\.id\}\/terraform\.tfstate`/,
    );
    for (const a of ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"])
      expect(allowing(a)).not.toEqual([]);
    for (const a of ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"])
      expect(allowing(a).flatMap((s) => list(s.Resource))).toEqual([
        "arn:aws:dynamodb:*:*:table/LABLINK_LOCK_TABLE",
      ]);
  });

  it("lets the web process presign work-archive uploads and downloads under the archive prefix only", () => {
    const [archive, ...more] = policy.Statement.filter((s) => s.Sid === "WorkArchiveObjects");
    expect(more).toEqual([]);
    // A presigned URL carries its signer's permissions: PutObject for the agent's upload on
    // release, GetObject for the researcher's profile link (server/cloud/s3/archive-signer.ts).
    expect([...list(archive?.Action ?? [])].sort()).toEqual(["s3:GetObject", "s3:PutObject"]);
    expect(list(archive?.Resource ?? [])).toEqual([
      "arn:aws:s3:::LABLINK_ARCHIVE_BUCKET/LABLINK_ARCHIVE_PREFIX/*",
    ]);
    const signer = read("server/cloud/s3/archive-signer.ts");
    expect(signer).toContain("PutObjectCommand");
    expect(signer).toContain("GetObjectCommand");
  });
});
