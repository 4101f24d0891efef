import { describe, expect, it } from "vitest";
import { verifiedGitHubEmail } from "./options";

describe("GitHub sign-in address", () => {
  it("is the verified primary address, else another verified one, never an unverified one", () => {
    const m = (email: string, primary: boolean, verified: boolean) => ({
      email,
      primary,
      verified,
    });
    expect(verifiedGitHubEmail([m("a@x.edu", false, true), m("b@x.edu", true, true)])).toBe(
      "b@x.edu",
    );
    // An unverified primary (Auth.js's own fallback picks it): the verified one instead.
    expect(verifiedGitHubEmail([m("boss@x.edu", true, false), m("me@y.org", false, true)])).toBe(
      "me@y.org",
    );
    expect(verifiedGitHubEmail([m("boss@x.edu", true, false)])).toBeNull();
    expect(verifiedGitHubEmail(null)).toBeNull();
  });
});
