export * from "./agent-credentials";
export * from "./audit";
export * from "./fleets";
export * from "./users";
export * from "./vms";
