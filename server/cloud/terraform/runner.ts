import { spawn } from "node:child_process";
import { type DriverRun, RunAborted } from "../driver";

/** One line of `terraform … -json` (the machine-readable UI). Only the fields we read. */
export type TfMessage = {
  "@level"?: string;
  "@message"?: string;
  type?: string;
  hook?: { resource?: { addr?: string }; action?: string; id_value?: string };
  change?: { resource?: { addr?: string }; action?: string };
  changes?: { add?: number; change?: number; remove?: number; import?: number; operation?: string };
  diagnostic?: { severity?: string; summary?: string; detail?: string };
};

export type TerraformRunnerOptions = {
  /** `terraform`, `tofu`, or a path. */
  bin: string;
  /** Between SIGINT (Terraform stops cleanly, saving state) and SIGTERM. */
  cancelGraceMs: number;
  /** Extra environment (AWS credentials come from the worker's own environment). */
  env?: Record<string, string | undefined>;
};

export class TerraformError extends Error {
  constructor(
    message: string,
    readonly exitCode: number | null,
  ) {
    super(message);
    this.name = "TerraformError";
  }
}

/**
 * Runs the Terraform CLI in a working folder and streams what it says into the operation log.
 * With `-json`, each line is a message: its text goes to the log, planned changes and completed
 * resources feed the progress count. On abort: SIGINT, then SIGTERM after the grace period;
 * Terraform on SIGINT finishes the in-flight API calls and writes its state before exiting.
 */
export class TerraformRunner {
  constructor(private readonly o: TerraformRunnerOptions) {}

  async run(
    cwd: string,
    args: string[],
    run: DriverRun,
    opts: { json?: boolean; capture?: boolean; progress?: { done: number; total: number } } = {},
  ): Promise<string> {
    if (run.signal.aborted) throw new RunAborted();
    const child = spawn(this.o.bin, args, {
      cwd,
      env: {
        ...process.env,
        ...this.o.env,
        TF_IN_AUTOMATION: "1",
        TF_INPUT: "0",
        CHECKPOINT_DISABLE: "1",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    const errors: string[] = [];
    const progress = opts.progress;

    const onLine = (line: string) => {
      if (!opts.json) {
        run.log(line);
        return;
      }
      let msg: TfMessage;
      try {
        msg = JSON.parse(line) as TfMessage;
      } catch {
        run.log(line);
        return;
      }
      const level =
        msg["@level"] === "error" ? "error" : msg["@level"] === "warn" ? "warn" : "info";
      const text = msg["@message"] ?? line;
      if (msg.type === "diagnostic") {
        const d = msg.diagnostic;
        const full = d?.detail ? `${text}: ${d.detail}` : text;
        if (d?.severity === "error") errors.push(d.summary ?? text);
        run.log(full, level);
        return;
      }
      run.log(text, level);
      if (!progress) return;
      if (msg.type === "planned_change") progress.total += 1;
      else if (msg.type === "change_summary" && msg.changes?.operation === "plan") {
        const c = msg.changes;
        progress.total = (c.add ?? 0) + (c.change ?? 0) + (c.remove ?? 0);
      } else if (msg.type === "apply_complete") progress.done += 1;
      else return;
      run.progress({ done: Math.min(progress.done, progress.total), total: progress.total });
    };

    const lines = (stream: NodeJS.ReadableStream, sink: (l: string) => void) => {
      let rest = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk: string) => {
        rest += chunk;
        const parts = rest.split("\n");
        rest = parts.pop() ?? "";
        for (const p of parts) if (p.trim()) sink(p);
      });
      stream.on("end", () => {
        if (rest.trim()) sink(rest);
      });
    };
    if (opts.capture) {
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (c: string) => {
        stdout += c;
      });
    } else lines(child.stdout, onLine);
    lines(child.stderr, (l) => {
      stderr += `${l}\n`;
      run.log(l, "warn");
    });

    let interrupted = false;
    let escalate: NodeJS.Timeout | null = null;
    const onAbort = () => {
      if (interrupted || child.exitCode !== null) return;
      interrupted = true;
      run.log(
        `interrupting terraform (SIGINT; SIGTERM in ${this.o.cancelGraceMs / 1000} s)`,
        "warn",
      );
      child.kill("SIGINT");
      escalate = setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) {
          run.log("terraform still running; sending SIGTERM", "warn");
          child.kill("SIGTERM");
        }
      }, this.o.cancelGraceMs);
    };
    run.signal.addEventListener("abort", onAbort);

    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>(
      (resolve, reject) => {
        child.once("error", (err) =>
          reject(
            new TerraformError(
              (err as NodeJS.ErrnoException).code === "ENOENT"
                ? `the Terraform binary "${this.o.bin}" was not found (set LABLINK_TERRAFORM_BIN)`
                : `could not start ${this.o.bin}: ${err.message}`,
              null,
            ),
          ),
        );
        child.once("close", (c, s) => resolve([c, s]));
      },
    ).finally(() => {
      run.signal.removeEventListener("abort", onAbort);
      if (escalate) clearTimeout(escalate);
    });

    if (interrupted) throw new RunAborted(`terraform ${args[0]} interrupted`);
    if (code !== 0) {
      const why = errors.join("; ") || stderr.trim().split("\n").at(-1) || `exit ${code ?? signal}`;
      throw new TerraformError(`terraform ${args[0]} failed: ${why}`, code);
    }
    return stdout;
  }
}
