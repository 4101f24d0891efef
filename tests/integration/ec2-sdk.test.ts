import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { Ec2Fleet, ec2Client } from "../../server/cloud/ec2/ec2";

/**
 * The EC2 client as it runs in production — the real AWS SDK with its adaptive retry strategy
 * and paginator, request signing and XML parsing — against scripted wire responses at the SDK's
 * HTTP seam (its request handler), since no AWS endpoint is reachable from here.
 */
type Reply = { status: number; body: string };
type Seen = { body: string; attempt: string | undefined };

function scripted(replies: Reply[]) {
  const seen: Seen[] = [];
  const requestHandler = {
    async handle(request: { body?: unknown; headers: Record<string, string> }) {
      seen.push({ body: String(request.body ?? ""), attempt: request.headers["amz-sdk-request"] });
      const r = replies.length > 1 ? (replies.shift() as Reply) : (replies[0] as Reply);
      return {
        response: {
          statusCode: r.status,
          headers: { "content-type": "text/xml;charset=UTF-8" },
          body: Readable.from([Buffer.from(r.body)]),
        },
      };
    },
  };
  const fleet = new Ec2Fleet({
    clientFor: (region) =>
      ec2Client(region, {
        credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "not-a-real-secret" },
        requestHandler: requestHandler as never,
      }),
  });
  return { fleet, seen };
}

const error = (code: string, message: string, status: number): Reply => ({
  status,
  body: `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>${code}</Code><Message>${message}</Message></Error></Errors><RequestID>req-1</RequestID></Response>`,
});

const page = (ids: string[], nextToken?: string): Reply => ({
  status: 200,
  body: `<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>req-2</requestId>
  <reservationSet><item><reservationId>r-1</reservationId><instancesSet>${ids
    .map(
      (id) =>
        `<item><instanceId>${id}</instanceId><instanceState><code>16</code><name>running</name></instanceState><tagSet><item><key>lablink:name</key><value>vm-${id}</value></item><item><key>lablink:fleet</key><value>gpu</value></item></tagSet></item>`,
    )
    .join("")}</instancesSet></item></reservationSet>
  ${nextToken ? `<nextToken>${nextToken}</nextToken>` : ""}
</DescribeInstancesResponse>`,
});

describe("EC2 through the AWS SDK", () => {
  it("uses the SDK's adaptive retry mode", async () => {
    const { config } = ec2Client("us-west-2");
    const value = async <T>(v: T | (() => Promise<T>)) =>
      typeof v === "function" ? (v as () => Promise<T>)() : v;
    expect(await value(config.retryMode)).toBe("adaptive");
    expect(await value(config.maxAttempts)).toBe(5);
  });

  it("retries throttling itself and then answers", async () => {
    const throttled = error("RequestLimitExceeded", "Request limit exceeded.", 503);
    const { fleet, seen } = scripted([throttled, throttled, page(["i-1"])]);
    const found = await fleet.describeFleet("us-west-2", "gpu");
    expect(found).toEqual([
      {
        vmName: "vm-i-1",
        vmId: undefined,
        providerId: "i-1",
        running: true,
        state: "running",
        publicIp: null,
        privateIp: null,
      },
    ]);
    // The SDK numbers its attempts in a header: three attempts of the same call.
    expect(seen.map((s) => s.attempt?.split(";")[0])).toEqual([
      "attempt=1",
      "attempt=2",
      "attempt=3",
    ]);
  });

  it("gives up after five attempts and says so", async () => {
    const { fleet, seen } = scripted([
      error("RequestLimitExceeded", "Request limit exceeded.", 503),
    ]);
    await expect(fleet.describeFleet("us-west-2", "gpu")).rejects.toThrow(
      "EC2 DescribeInstances failed after 5 attempt(s): RequestLimitExceeded: Request limit exceeded.",
    );
    expect(seen).toHaveLength(5);
  }, 60_000);

  it("does not retry a refusal", async () => {
    const { fleet, seen } = scripted([
      error("UnauthorizedOperation", "You are not authorized to perform this operation.", 403),
    ]);
    await expect(fleet.reboot("us-west-2", "i-1")).rejects.toThrow(
      /EC2 RebootInstances failed after 1 attempt\(s\): UnauthorizedOperation/,
    );
    expect(seen).toHaveLength(1);
    expect(seen[0]?.body).toContain("Action=RebootInstances");
    expect(seen[0]?.body).toContain("InstanceId.1=i-1");
  });

  it("pages through DescribeInstances with the SDK's paginator", async () => {
    const { fleet, seen } = scripted([page(["i-1", "i-2"], "next-page"), page(["i-3"])]);
    const found = await fleet.describeFleet("us-west-2", "gpu");
    expect(found.map((f) => f.providerId)).toEqual(["i-1", "i-2", "i-3"]);
    expect(seen).toHaveLength(2);
    expect(seen[0]?.body).toContain("MaxResults=500");
    expect(seen[0]?.body).toContain("Filter.1.Name=tag%3Alablink%3Afleet");
    expect(seen[1]?.body).toContain("NextToken=next-page");
  });
});
