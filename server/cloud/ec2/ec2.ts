import {
  DescribeInstancesCommand,
  EC2Client,
  type EC2ClientConfig,
  type Instance,
  paginateDescribeInstances,
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
  /** A cold reboot: stop, wait until stopped, start (a new host; the public IP may change). */
  /** Stops, starts, waits for "running" and returns the instance as it runs now (new addresses). */
  stopAndStart(region: string, instanceId: string, opts?: StopStartOptions): Promise<InstanceInfo>;
  terminate(region: string, instanceId: string): Promise<void>;
}

export type StopStartOptions = {
  signal?: AbortSignal;
  /** How often the instance's state is read while it stops (default 5 s). */
  pollMs?: number;
  /** Give up waiting for "stopped", then for "running", after this long each (default 10 min). */
  timeoutMs?: number;
};

export type Ec2Options = {
  /** One client per region; credentials from the standard AWS chain (env, profile, role). */
  clientFor?: (region: string) => EC2Client;
  /** Attempts per call, retries included (the SDK's adaptive retry strategy). */
  maxAttempts?: number;
};

/**
 * A region's client: the SDK's **adaptive** retry mode retries throttling, transient and
 * server errors with exponential backoff and jitter, and slows every call of this client down
 * while EC2 throttles (a client-side rate limiter), so a burst of reconciliation calls does not
 * keep hitting RequestLimitExceeded.
 */
export function ec2Client(
  region: string,
  /** Tests hand in credentials and a request handler (the HTTP seam). */
  overrides: Partial<EC2ClientConfig> & { maxAttempts?: number } = {},
): EC2Client {
  return new EC2Client({ region, retryMode: "adaptive", maxAttempts: 5, ...overrides });
}

/**
 * EC2 through the AWS SDK v3: instances found by their `lablink:fleet` tag, and the per-instance
 * actions Terraform is poor at (reboot, stop/start, terminate one).
 */
export class Ec2Fleet implements Ec2Api {
  private readonly clients = new Map<string, EC2Client>();

  constructor(private readonly o: Ec2Options = {}) {}

  private client(region: string): EC2Client {
    let c = this.clients.get(region);
    if (!c) {
      c =
        this.o.clientFor?.(region) ??
        ec2Client(region, this.o.maxAttempts ? { maxAttempts: this.o.maxAttempts } : {});
      this.clients.set(region, c);
    }
    return c;
  }

  /** Runs one call; a failure names the call, the error and how many attempts the SDK made. */
  private async call<T>(what: string, fn: (client: EC2Client) => Promise<T>, region: string) {
    try {
      return await fn(this.client(region));
    } catch (err) {
      const e = err as { name?: string; $metadata?: { attempts?: number } };
      const msg = err instanceof Error ? err.message : String(err);
      const attempts = e.$metadata?.attempts ?? 1;
      throw new Error(
        `EC2 ${what} failed after ${attempts} attempt(s): ${e.name ?? "Error"}: ${msg}`,
        { cause: err },
      );
    }
  }

  async describeFleet(region: string, fleetName: string): Promise<InstanceInfo[]> {
    return this.call(
      "DescribeInstances",
      async (client) => {
        const out: InstanceInfo[] = [];
        const pages = paginateDescribeInstances(
          { client, pageSize: 500 },
          { Filters: [{ Name: "tag:lablink:fleet", Values: [fleetName] }] },
        );
        for await (const page of pages)
          for (const r of page.Reservations ?? [])
            for (const i of r.Instances ?? []) out.push(toInfo(i));
        return out;
      },
      region,
    );
  }

  async reboot(region: string, instanceId: string) {
    await this.call(
      "RebootInstances",
      (c) => c.send(new RebootInstancesCommand({ InstanceIds: [instanceId] })),
      region,
    );
  }

  async stop(region: string, instanceId: string) {
    await this.call(
      "StopInstances",
      (c) => c.send(new StopInstancesCommand({ InstanceIds: [instanceId] })),
      region,
    );
  }

  async start(region: string, instanceId: string) {
    await this.call(
      "StartInstances",
      (c) => c.send(new StartInstancesCommand({ InstanceIds: [instanceId] })),
      region,
    );
  }

  async stopAndStart(region: string, instanceId: string, opts: StopStartOptions = {}) {
    await this.stop(region, instanceId);
    await this.waitFor(region, instanceId, "stopped", opts);
    await this.start(region, instanceId);
    // A stopped instance gives up its public address: the one it runs with now is new.
    return this.waitFor(region, instanceId, "running", opts);
  }

  private async waitFor(
    region: string,
    instanceId: string,
    wanted: "stopped" | "running",
    opts: StopStartOptions,
  ): Promise<InstanceInfo> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10 * 60_000);
    for (;;) {
      opts.signal?.throwIfAborted();
      const info = await this.instance(region, instanceId);
      const state = info?.state ?? "unknown";
      if (info && state === wanted) return info;
      if (state === "terminated" || state === "shutting-down")
        throw new Error(`EC2 instance ${instanceId} is ${state}; it cannot be started again`);
      if (Date.now() > deadline)
        throw new Error(
          `EC2 instance ${instanceId} did not become ${wanted} in time (still ${state})`,
        );
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 5_000));
    }
  }

  private async instance(region: string, instanceId: string): Promise<InstanceInfo | null> {
    return this.call(
      "DescribeInstances",
      async (c) => {
        const out = await c.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }));
        const i = out.Reservations?.[0]?.Instances?.[0];
        return i ? toInfo(i) : null;
      },
      region,
    );
  }

  async terminate(region: string, instanceId: string) {
    await this.call(
      "TerminateInstances",
      (c) => c.send(new TerminateInstancesCommand({ InstanceIds: [instanceId] })),
      region,
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
    publicIp: i.PublicIpAddress ?? null,
    privateIp: i.PrivateIpAddress ?? null,
  };
}
