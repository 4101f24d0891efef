import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { and, eq, gt, isNull, ne, or, sql } from "drizzle-orm";
import type { DbOrTx } from "../db/client";
import { preparedPerDb } from "../db/prepared";
import { agentCredentials, fleets, type Vm, vms } from "../db/schema";

/**
 * Per-VM agent tokens: `lla_<credential id>_<32 random bytes, base64url>`. The credential id lets
 * us find the row without comparing secrets in SQL; only SHA-256(secret) is stored, and it is
 * compared in constant time.
 */
const PREFIX = "lla";
const TOKEN_RE = /^lla_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$/;

const sha256 = (s: string) => createHash("sha256").update(s).digest();

const toUuid = (hex: string) =>
  `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;

/** Inserts a credential row and returns its token (shown once, never stored). */
async function insertToken(db: DbOrTx, vmId: string, pending: boolean): Promise<string> {
  const secret = randomBytes(32).toString("base64url");
  const [cred] = await db
    .insert(agentCredentials)
    .values({ vmId, tokenHash: sha256(secret).toString("hex"), pending })
    .returning({ id: agentCredentials.id });
  if (!cred) throw new Error("credential insert returned nothing");
  return `${PREFIX}_${cred.id.replaceAll("-", "")}_${secret}`;
}

const live = or(isNull(agentCredentials.revokedAt), gt(agentCredentials.revokedAt, sql`now()`));

/**
 * Issues a new token for a VM. By default its earlier tokens are revoked after `graceSeconds`
 * (0: at once). With `keepOthers` the new token is pending instead: the VM's earlier tokens keep
 * working until one of its tokens is used, and that first use revokes the rest. Terraform uses
 * this for VMs being created: a run killed mid-apply may already have booted an instance with
 * the token it wrote into that VM's user data, and the next run must not revoke it.
 */
export async function issueAgentToken(
  db: DbOrTx,
  vmId: string,
  options: { graceSeconds?: number; keepOthers?: boolean } = {},
): Promise<string> {
  if (options.keepOthers) return insertToken(db, vmId, true);
  const grace = options.graceSeconds ?? 0;
  return db.transaction(async (tx) => {
    await tx
      .update(agentCredentials)
      .set({ revokedAt: sql`now() + make_interval(secs => ${grace})` })
      .where(and(eq(agentCredentials.vmId, vmId), isNull(agentCredentials.revokedAt)));
    return insertToken(tx, vmId, false);
  });
}

/**
 * An agent asks for a new token (at start-up, and before it sets a VM up for each new holder).
 * The new token is pending: the caller's token keeps working until the new one is used once, so
 * a reply lost on the way costs nothing (the agent asks again with the token it still has); that
 * first use revokes the caller's token. Tokens handed out by earlier rotations that were never
 * used (their reply was lost) are revoked now: the caller evidently does not have them.
 */
export async function rotateAgentToken(
  db: DbOrTx,
  params: { vmId: string; callerCredentialId: string },
): Promise<string> {
  return db.transaction(async (tx) => {
    await tx
      .update(agentCredentials)
      .set({ revokedAt: sql`now()` })
      .where(
        and(
          eq(agentCredentials.vmId, params.vmId),
          eq(agentCredentials.pending, true),
          ne(agentCredentials.id, params.callerCredentialId),
          live,
        ),
      );
    return insertToken(tx, params.vmId, true);
  });
}

/**
 * The first use of a pending token: it becomes the VM's token and every other token of the VM
 * stops working at once (the old token of a rotation, the other candidates Terraform wrote).
 */
async function activate(db: DbOrTx, credentialId: string): Promise<void> {
  await db.execute(sql`
    WITH used AS (
      UPDATE ${agentCredentials} SET pending = false, last_used_at = now()
      WHERE id = ${credentialId} AND pending
      RETURNING vm_id
    )
    UPDATE ${agentCredentials} SET revoked_at = now()
    WHERE vm_id IN (SELECT vm_id FROM used) AND id <> ${credentialId}
      AND (revoked_at IS NULL OR revoked_at > now())`);
}

/** Revokes every token of a VM now (terminated VMs). */
export async function revokeAgentTokens(db: DbOrTx, vmId: string): Promise<void> {
  await db
    .update(agentCredentials)
    .set({ revokedAt: sql`now()` })
    .where(
      and(
        eq(agentCredentials.vmId, vmId),
        or(isNull(agentCredentials.revokedAt), gt(agentCredentials.revokedAt, sql`now()`)),
      ),
    );
}

export type AgentIdentity = { vmId: string; credentialId: string };

export type AgentVm = Vm & { expectedGpus: number };

/**
 * Every agent call checks its token, and reads its VM (with the fleet's expected GPU count) in the
 * same statement: one round trip for what a heartbeat needs. Built once per database and sent as
 * a named prepared statement. Revocation is read from the database on every call, so it takes
 * effect immediately.
 *
 * Calls that arrive together (thousands of agents heartbeating) share the statement: the lookups
 * made in one turn of the event loop go out as one `= ANY($1)` query when the turn ends, so a
 * burst of N heartbeats costs Postgres one statement instead of N, and each lookup still sees
 * the database as of (slightly after) its own request.
 */
const credentialQuery = preparedPerDb((db) =>
  db
    .select({
      credentialId: agentCredentials.id,
      tokenHash: agentCredentials.tokenHash,
      pending: agentCredentials.pending,
      vm: vms,
      expectedGpus: fleets.gpuCount,
    })
    .from(agentCredentials)
    .innerJoin(vms, eq(vms.id, agentCredentials.vmId))
    .innerJoin(fleets, eq(fleets.id, vms.fleetId))
    .where(
      and(
        sql`${agentCredentials.id} = any(${sql.placeholder("credentialIds")}::uuid[])`,
        or(isNull(agentCredentials.revokedAt), gt(agentCredentials.revokedAt, sql`now()`)),
      ),
    )
    .prepare("lablink_agent_credentials"),
);

type CredentialRow = Awaited<ReturnType<ReturnType<typeof credentialQuery>["execute"]>>[number];

/** At most this many ids per statement; a larger burst is split. */
const MAX_BATCH = 500;

class CredentialLookups {
  private waiting = new Map<
    string,
    { resolve: (row: CredentialRow | undefined) => void; reject: (err: unknown) => void }[]
  >();
  private scheduled = false;
  /** Counters (tests, benchmarks): lookups asked for, statements sent. */
  readonly stats = { lookups: 0, statements: 0 };

  constructor(private readonly db: DbOrTx) {}

  load(credentialId: string): Promise<CredentialRow | undefined> {
    this.stats.lookups++;
    return new Promise((resolve, reject) => {
      const list = this.waiting.get(credentialId);
      if (list) list.push({ resolve, reject });
      else this.waiting.set(credentialId, [{ resolve, reject }]);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.run());
      }
    });
  }

  private run() {
    this.scheduled = false;
    const batch = this.waiting;
    this.waiting = new Map();
    const ids = [...batch.keys()];
    for (let i = 0; i < ids.length; i += MAX_BATCH) {
      const chunk = ids.slice(i, i + MAX_BATCH);
      this.stats.statements++;
      credentialQuery(this.db)
        .execute({ credentialIds: chunk })
        .then(
          (rows) => {
            const byId = new Map(rows.map((r) => [r.credentialId, r]));
            for (const id of chunk) for (const w of batch.get(id) ?? []) w.resolve(byId.get(id));
          },
          (err: unknown) => {
            for (const id of chunk) for (const w of batch.get(id) ?? []) w.reject(err);
          },
        );
    }
  }
}

const lookups = preparedPerDb((db) => new CredentialLookups(db));

/** How many token lookups this process made on `db`, and in how many statements. */
export function credentialLookupStats(db: DbOrTx): { lookups: number; statements: number } {
  return { ...lookups(db).stats };
}

/**
 * Returns the VM a token acts for (and the VM's row as of now), or null for a malformed, unknown
 * or revoked token.
 */
export async function verifyAgentToken(
  db: DbOrTx,
  token: string,
): Promise<(AgentIdentity & { vm: AgentVm }) | null> {
  const m = TOKEN_RE.exec(token);
  if (!m?.[1] || !m[2]) return null;
  const credentialId = toUuid(m[1]);
  const cred = await lookups(db).load(credentialId);
  // Hash even when the row is missing, so both paths take the same time.
  const presented = sha256(m[2]);
  const stored = cred ? Buffer.from(cred.tokenHash, "hex") : Buffer.alloc(32);
  const match = stored.length === presented.length && timingSafeEqual(stored, presented);
  if (cred && match && cred.pending) await activate(db, credentialId);
  return cred && match
    ? { vmId: cred.vm.id, credentialId, vm: { ...cred.vm, expectedGpus: cred.expectedGpus } }
    : null;
}

/** Parses `Authorization: Bearer <token>`; anything else yields null. */
export function bearerToken(header: string | null | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer ([^\s]+)$/.exec(header.trim());
  return m?.[1] ?? null;
}
