export * from "./agent-credentials";
export * from "./audit";
export * from "./enrollment-tokens";
export * from "./fleets";
export * from "./groups";
export * from "./rate-limits";
export * from "./users";
export * from "./vms";
