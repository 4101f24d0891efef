import { describe, expect, it } from "vitest";
import { MAX_LINE, redact } from "./redact";

describe("redact", () => {
  it("removes registered secrets and anything shaped like a token or key", () => {
    const token = `lla_${"0".repeat(32)}_${"x".repeat(43)}`;
    expect(redact(`token ${token} done`)).toBe("token [redacted] done");
    expect(redact("key AKIAIOSFODNN7EXAMPLE")).toBe("key [redacted]");
    expect(redact('"aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"')).toBe(
      '"aws_secret_access_key": "[redacted]"',
    );
    expect(redact("password=hunter2hunter2")).toBe("password=[redacted]");
    expect(redact("-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----")).toBe(
      "[redacted]",
    );
    expect(redact("the value s3cr3t-value-123 leaked", ["s3cr3t-value-123"])).toBe(
      "the value [redacted] leaked",
    );
  });

  it("leaves ordinary Terraform lines alone and cuts very long lines", () => {
    const line = 'aws_instance.vm["lab-1"]: Creation complete after 13s [id=i-0abc]';
    expect(redact(line)).toBe(line);
    expect(redact("x".repeat(MAX_LINE + 50))).toHaveLength(MAX_LINE + "… [line cut]".length);
  });
});
