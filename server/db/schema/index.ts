export * from "./agent-credentials";
export * from "./audit";
export * from "./fleets";
export * from "./handoffs";
export * from "./ssh-keys";
export * from "./users";
export * from "./vms";
