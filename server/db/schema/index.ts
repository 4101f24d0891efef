export * from "./agent-credentials";
export * from "./audit";
export * from "./fleets";
export * from "./operations";
export * from "./users";
export * from "./vms";
