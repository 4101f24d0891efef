import {
  DescribeInstancesCommand,
  EC2Client,
  type Instance,
  RebootInstancesCommand,
  StartInstancesCommand,
  StopInstancesCommand,
  TerminateInstancesCommand,
} from "@aws-sdk/client-ec2";
import type { InstanceInfo } from "../driver";

/** What recovery and reconciliation need from EC2; the Terraform driver uses it for reboots. */
export interface Ec2Api {
  describeFleet(region: string, fleetName: string): Promise<InstanceInfo[]>;
  reboot(region: string, instanceId: string): Promise<void>;
  stop(region: string, instanceId: string): Promise<void>;
  start(region: string, instanceId: string): Promise<void>;
  terminate(region: string, instanceId: string): Promise<void>;
}

export type Ec2Options = {
  /** One client per region; credentials from the standard AWS chain (env, profile, role). */
  clientFor?: (region: string) => EC2Client;
  /** Attempts per call when AWS throttles or hiccups (exponential backoff with jitter). */
  attempts?: number;
  baseDelayMs?: number;
  sleep?: (ms: number) => Promise<void>;
};

const RETRYABLE = new Set([
  "RequestLimitExceeded",
  "Throttling",
  "ThrottlingException",
  "TooManyRequestsException",
  "ServiceUnavailable",
  "Unavailable",
  "InternalError",
  "InternalFailure",
  "RequestTimeout",
  "RequestTimeoutException",
]);

export function isRetryable(err: unknown): boolean {
  const e = err as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
  if (RETRYABLE.has(e?.name ?? "") || RETRYABLE.has(e?.Code ?? "")) return true;
  const status = e?.$metadata?.httpStatusCode ?? 0;
  return status === 429 || status >= 500;
}

/**
 * EC2 through the AWS SDK v3: instances found by their `lablink:fleet` tag, and the per-instance
 * actions Terraform is poor at (reboot, stop/start, terminate one).
 */
export class Ec2Fleet implements Ec2Api {
  private readonly clients = new Map<string, EC2Client>();
  private readonly attempts: number;
  private readonly baseDelayMs: number;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly o: Ec2Options = {}) {
    this.attempts = o.attempts ?? 5;
    this.baseDelayMs = o.baseDelayMs ?? 200;
    this.sleep = o.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  private client(region: string): EC2Client {
    let c = this.clients.get(region);
    if (!c) {
      // Our own retry loop below covers throttling; the SDK's would multiply the attempts.
      c = this.o.clientFor?.(region) ?? new EC2Client({ region, maxAttempts: 1 });
      this.clients.set(region, c);
    }
    return c;
  }

  private async retry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (attempt >= this.attempts || !isRetryable(err)) {
          const name = (err as { name?: string }).name ?? "Error";
          const msg = err instanceof Error ? err.message : String(err);
          throw new Error(`EC2 ${what} failed after ${attempt} attempt(s): ${name}: ${msg}`, {
            cause: err,
          });
        }
        const delay = this.baseDelayMs * 2 ** (attempt - 1);
        await this.sleep(delay / 2 + Math.random() * (delay / 2));
      }
    }
  }

  async describeFleet(region: string, fleetName: string): Promise<InstanceInfo[]> {
    const out: InstanceInfo[] = [];
    let token: string | undefined;
    do {
      const page = await this.retry("DescribeInstances", () =>
        this.client(region).send(
          new DescribeInstancesCommand({
            Filters: [{ Name: "tag:lablink:fleet", Values: [fleetName] }],
            NextToken: token,
            MaxResults: 500,
          }),
        ),
      );
      for (const r of page.Reservations ?? [])
        for (const i of r.Instances ?? []) out.push(toInfo(i));
      token = page.NextToken;
    } while (token);
    return out;
  }

  async reboot(region: string, instanceId: string) {
    await this.retry("RebootInstances", () =>
      this.client(region).send(new RebootInstancesCommand({ InstanceIds: [instanceId] })),
    );
  }

  async stop(region: string, instanceId: string) {
    await this.retry("StopInstances", () =>
      this.client(region).send(new StopInstancesCommand({ InstanceIds: [instanceId] })),
    );
  }

  async start(region: string, instanceId: string) {
    await this.retry("StartInstances", () =>
      this.client(region).send(new StartInstancesCommand({ InstanceIds: [instanceId] })),
    );
  }

  async terminate(region: string, instanceId: string) {
    await this.retry("TerminateInstances", () =>
      this.client(region).send(new TerminateInstancesCommand({ InstanceIds: [instanceId] })),
    );
  }
}

function toInfo(i: Instance): InstanceInfo {
  const tag = (k: string) => i.Tags?.find((t) => t.Key === k)?.Value;
  const state = i.State?.Name ?? "unknown";
  return {
    vmName: tag("lablink:name") ?? tag("Name") ?? i.InstanceId ?? "",
    vmId: tag("lablink:vm"),
    providerId: i.InstanceId ?? "",
    running: state === "running",
    state,
  };
}
