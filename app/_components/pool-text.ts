import type { Outlook, PoolSummary } from "@/server/domain/pool";

/** What the portal says about availability and time, kept apart from React so it is unit-tested. */

/** "about 4 min" / "about 1 h 20 min": how long a wait is, rounded up to the minute. */
export function aboutMinutes(seconds: number): string {
  const minutes = Math.max(1, Math.ceil(seconds / 60));
  if (minutes < 60) return `about ${minutes} min`;
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return `about ${h} h${m ? ` ${m} min` : ""}`;
}

const OPERATION_WORDS: Record<string, string> = {
  "fleet.create": "being created",
  "fleet.scale": "being resized",
};

/** Why a claim from this fleet would fail now, and when capacity is expected; null when it would not. */
export function outlookText(o: Outlook): string | null {
  switch (o.kind) {
    case "available":
      return null;
    case "booting":
      return `${o.booting} ${o.booting === 1 ? "VM is" : "VMs are"} starting up${
        o.etaSeconds === null ? "." : `, usually ready in ${aboutMinutes(o.etaSeconds)}.`
      }`;
    case "scaling": {
      const p = o.operation.progress;
      return `The fleet is ${OPERATION_WORDS[o.operation.kind] ?? "changing"}${
        o.operation.status === "queued" ? " (queued)" : ""
      }${p && p.total > 0 ? `: ${p.done} of ${p.total} steps done` : ""}; new VMs will appear here.`;
    }
    case "full":
      return "Every VM is in use; one frees up when its researcher releases it.";
    case "out_of_service":
      return "No VM is in service: they are unhealthy or drained by an admin. Ask your LabLink admin.";
    case "empty":
      return "This fleet has no VMs yet.";
  }
}

/** What the pool as a whole says when nothing can be claimed. */
export function poolMessage(s: PoolSummary): string | null {
  if (s.fleets.length === 0) {
    return s.otherGroupsFleets > 0
      ? "No fleet is open to your groups: the fleets here are reserved for other groups. Ask your LabLink admin to add you to one."
      : "There are no GPU fleets yet. Your LabLink admin creates them.";
  }
  if (s.totals.ready > 0) return null;
  const booting = s.fleets.flatMap((f) => (f.outlook.kind === "booting" ? [f.outlook] : []));
  if (booting.length > 0) {
    const n = booting.reduce((sum, o) => sum + o.booting, 0);
    const etas = booting.flatMap((o) => (o.etaSeconds === null ? [] : [o.etaSeconds]));
    return `No VM is free right now. ${n} ${n === 1 ? "VM is" : "VMs are"} starting up${
      etas.length ? `, usually ready in ${aboutMinutes(Math.min(...etas))}` : ""
    }.`;
  }
  if (s.fleets.some((f) => f.outlook.kind === "scaling"))
    return "No VM is free right now. A fleet is being created or resized; new VMs will appear here.";
  if (s.fleets.some((f) => f.outlook.kind === "full"))
    return "No VM is free right now: every VM is in use. One frees up when its researcher releases it.";
  return "No VM can be claimed right now: none is in service. Ask your LabLink admin.";
}

/** "2 h 05 min", "14 min", "under a minute". */
export function duration(ms: number): string {
  const minutes = Math.floor(Math.max(0, ms) / 60_000);
  if (minutes < 1) return "under a minute";
  if (minutes < 60) return `${minutes} min`;
  const days = Math.floor(minutes / 1440);
  const h = Math.floor((minutes % 1440) / 60);
  const m = String(minutes % 60).padStart(2, "0");
  return days > 0 ? `${days} d ${h} h ${m} min` : `${h} h ${m} min`;
}
