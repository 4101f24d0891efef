import { z } from "zod";
import {
  createGroup,
  deleteGroup,
  groupMembersOf,
  listGroups,
  setFleetGroups,
  setMembership,
} from "../../domain/groups";
import { adminProcedure, createRouter, noInput } from "../trpc";

const groupName = z
  .string()
  .trim()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9 ._-]+$/, "Letters, digits, spaces, dots, dashes and underscores only");

export const groupRouter = createRouter({
  list: adminProcedure.input(noInput).query(({ ctx }) => listGroups(ctx.db)),

  members: adminProcedure
    .input(z.strictObject({ groupId: z.uuid() }))
    .query(({ ctx, input }) => groupMembersOf(ctx.db, input.groupId)),

  create: adminProcedure
    .input(z.strictObject({ name: groupName, description: z.string().trim().max(500).optional() }))
    .mutation(({ ctx, input }) => createGroup(ctx.db, { ...input, actor: ctx.actor })),

  delete: adminProcedure
    .input(z.strictObject({ groupId: z.uuid() }))
    .mutation(({ ctx, input }) => deleteGroup(ctx.db, { ...input, actor: ctx.actor })),

  addMember: adminProcedure
    .input(z.strictObject({ groupId: z.uuid(), userId: z.uuid() }))
    .mutation(({ ctx, input }) =>
      setMembership(ctx.db, { ...input, member: true, actor: ctx.actor }),
    ),

  removeMember: adminProcedure
    .input(z.strictObject({ groupId: z.uuid(), userId: z.uuid() }))
    .mutation(({ ctx, input }) =>
      setMembership(ctx.db, { ...input, member: false, actor: ctx.actor }),
    ),

  /** Restricts a fleet to these groups; an empty list opens it to every researcher. */
  setFleetGroups: adminProcedure
    .input(z.strictObject({ fleetId: z.uuid(), groupIds: z.array(z.uuid()).max(100) }))
    .mutation(({ ctx, input }) => setFleetGroups(ctx.db, { ...input, actor: ctx.actor })),
});
