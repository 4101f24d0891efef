/**
 * The login researchers use on a fleet's VMs when its config names none: the default user of the
 * Ubuntu images (AWS Deep Learning AMIs included) LabLink fleets run on. It must match the agent's
 * LABLINK_RESEARCH_USER, the account whose authorized_keys receives the researcher's keys.
 */
export const DEFAULT_SSH_USER = "ubuntu";

/**
 * The throw-away Unix account an agent creates for one assignment: `ll-` and the last 12 hex
 * digits of the assignment id (the random part in every UUID version), so it can never be the name
 * of a real user and differs for every holder. The agent refuses any other form.
 */
export function researchAccountName(assignmentId: string): string {
  return `ll-${assignmentId.replace(/-/g, "").toLowerCase().slice(-12)}`;
}
