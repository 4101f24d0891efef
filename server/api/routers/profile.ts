import { z } from "zod";
import { groupsOfUser } from "../../domain/groups";
import { addSshKey, listSshKeys, removeSshKey } from "../../domain/ssh-keys";
import { myArchives } from "../../domain/work-archive";
import { createRouter, noInput, researcherProcedure } from "../trpc";
import { apiTokenRouter } from "./api-tokens";

/** The signed-in researcher's own settings. */
export const profileRouter = createRouter({
  /** The groups they are in, and the restricted fleets each opens to them. */
  groups: researcherProcedure.input(noInput).query(({ ctx }) => groupsOfUser(ctx.db, ctx.user.id)),

  sshKeys: createRouter({
    /** Their SSH keys: label, type, fingerprint (the key itself is not echoed back). */
    list: researcherProcedure.input(noInput).query(({ ctx }) => listSshKeys(ctx.db, ctx.user.id)),

    /** Adds a public key (ssh-ed25519, ecdsa, or rsa ≥ 3072 bits), installed at the next claim. */
    add: researcherProcedure
      .input(
        z.strictObject({
          publicKey: z.string().trim().min(1).max(16_384),
          label: z.string().trim().min(1).max(64).optional(),
        }),
      )
      .mutation(({ ctx, input }) => addSshKey(ctx.db, { userId: ctx.user.id, ...input })),

    remove: researcherProcedure
      .input(z.strictObject({ id: z.uuid() }))
      .mutation(({ ctx, input }) => removeSshKey(ctx.db, { userId: ctx.user.id, id: input.id })),
  }),

  /**
   * Their work folders uploaded to S3 at release (fleets with a work archive), until they
   * expire, each with a download link made for this view; failed uploads with the reason.
   */
  workArchives: researcherProcedure
    .input(noInput)
    .query(({ ctx }) => myArchives(ctx.db, ctx.user.id)),

  /** Personal API tokens for the `lablink` CLI and scripts (admins, from a session). */
  apiTokens: apiTokenRouter,
});
