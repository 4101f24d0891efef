"use client";

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useTRPC } from "@/app/providers";
import {
  buttonClass,
  ConfirmButton,
  Empty,
  ErrorMessage,
  errorText,
  inputClass,
  Loading,
  panelClass,
  primaryClass,
} from "../ui";

export function GroupsAdmin() {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const refresh = () => queryClient.invalidateQueries();
  const groups = useQuery({ ...trpc.group.list.queryOptions(), refetchOnMount: "always" });
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [openId, setOpenId] = useState<string | null>(null);
  const create = useMutation(
    trpc.group.create.mutationOptions({
      onSuccess: (g) => {
        setName("");
        setDescription("");
        setOpenId(g.id);
        return refresh();
      },
    }),
  );
  const remove = useMutation(
    trpc.group.delete.mutationOptions({
      onSuccess: () => {
        setOpenId(null);
        return refresh();
      },
    }),
  );
  const open = groups.data?.find((g) => g.id === openId) ?? null;

  return (
    <div className="space-y-6">
      <h1 className="text-2xl font-semibold">Groups</h1>
      <p className="text-sm text-slate-600 dark:text-slate-400">
        A group is a set of people (a lab, a course). A fleet restricted to groups can be claimed
        only by their members; a fleet without groups is open to every researcher.
      </p>

      <form
        aria-labelledby="new-group-heading"
        className={`flex flex-wrap items-end gap-3 ${panelClass}`}
        onSubmit={(e) => {
          e.preventDefault();
          create.mutate({ name, description: description || undefined });
        }}
      >
        <h2 id="new-group-heading" className="w-full text-lg font-semibold">
          New group
        </h2>
        <label className="flex flex-col gap-1 text-sm">
          Group name
          <input
            className={inputClass}
            value={name}
            maxLength={64}
            required
            onChange={(e) => setName(e.target.value)}
          />
        </label>
        <label className="flex grow flex-col gap-1 text-sm">
          Description (optional)
          <input
            className={inputClass}
            value={description}
            maxLength={500}
            onChange={(e) => setDescription(e.target.value)}
          />
        </label>
        <button type="submit" className={primaryClass} disabled={create.isPending}>
          Create group
        </button>
        <div className="w-full">
          <ErrorMessage error={create.error} prefix="Could not create the group" />
        </div>
      </form>

      <section aria-labelledby="groups-heading" className="space-y-3">
        <h2 id="groups-heading" className="text-lg font-semibold">
          All groups
        </h2>
        {groups.isPending && <Loading what="groups" />}
        <ErrorMessage error={groups.error} prefix="Could not load groups" />
        {groups.data?.length === 0 && (
          <Empty>No groups yet: every fleet is open to everyone.</Empty>
        )}
        {groups.data && groups.data.length > 0 && (
          <ul className="grid gap-3 md:grid-cols-2">
            {groups.data.map((g) => (
              <li key={g.id} data-testid="group-card" className={`space-y-2 text-sm ${panelClass}`}>
                <p className="font-medium">{g.name}</p>
                {g.description && (
                  <p className="text-slate-600 dark:text-slate-400">{g.description}</p>
                )}
                <p>
                  {g.members} {g.members === 1 ? "member" : "members"} · fleets:{" "}
                  {g.fleets.length ? g.fleets.join(", ") : "none"}
                </p>
                <div className="flex flex-wrap gap-2">
                  <button
                    type="button"
                    className={buttonClass}
                    aria-expanded={openId === g.id}
                    aria-controls="group-detail"
                    onClick={() => setOpenId(openId === g.id ? null : g.id)}
                  >
                    {openId === g.id ? `Close ${g.name}` : `Manage ${g.name}`}
                  </button>
                  <ConfirmButton
                    label={`Delete ${g.name}`}
                    question={`Delete ${g.name}? Its fleets lose this restriction.`}
                    confirmLabel="Delete group"
                    danger
                    pending={remove.isPending}
                    onConfirm={() => remove.mutate({ groupId: g.id })}
                  />
                </div>
                {remove.variables?.groupId === g.id && (
                  <ErrorMessage error={remove.error} prefix="Could not delete" />
                )}
              </li>
            ))}
          </ul>
        )}
      </section>

      {open && <GroupDetail key={open.id} group={open} onChanged={refresh} />}
    </div>
  );
}

function GroupDetail({
  group,
  onChanged,
}: {
  group: { id: string; name: string; fleets: string[] };
  onChanged: () => Promise<void>;
}) {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const members = useQuery(trpc.group.members.queryOptions({ groupId: group.id }));
  const fleets = useQuery({ ...trpc.fleet.list.queryOptions(), refetchOnMount: "always" });
  const groups = useQuery({ ...trpc.group.list.queryOptions(), refetchOnMount: "always" });
  const [email, setEmail] = useState("");
  const [lookupError, setLookupError] = useState<string | null>(null);
  const add = useMutation(
    trpc.group.addMember.mutationOptions({
      onSuccess: () => {
        setEmail("");
        return onChanged();
      },
    }),
  );
  const remove = useMutation(trpc.group.removeMember.mutationOptions({ onSettled: onChanged }));
  const setFleetGroups = useMutation(
    trpc.group.setFleetGroups.mutationOptions({ onSettled: onChanged }),
  );

  const addByEmail = async () => {
    setLookupError(null);
    const wanted = email.trim().toLowerCase();
    if (!wanted) return;
    try {
      const found = await queryClient.fetchQuery(
        trpc.user.list.queryOptions({ search: wanted, limit: 20, offset: 0 }),
      );
      const user = found.rows.find((u) => u.email?.toLowerCase() === wanted);
      if (!user) {
        setLookupError(
          `Nobody with the email ${wanted} has signed in yet; they must sign in once first.`,
        );
        return;
      }
      add.mutate({ groupId: group.id, userId: user.id });
    } catch (e) {
      setLookupError(errorText(e as { message: string }));
    }
  };

  // A fleet's groups, read back from every group's fleet list (fleet names are unique).
  const groupsOfFleet = (fleetName: string) =>
    (groups.data ?? []).filter((g) => g.fleets.includes(fleetName)).map((g) => g.id);

  return (
    <section
      id="group-detail"
      aria-labelledby="group-detail-heading"
      className={`space-y-4 ${panelClass}`}
    >
      <h2 id="group-detail-heading" className="text-lg font-semibold">
        {group.name}
      </h2>

      <div className="space-y-2">
        <h3 className="font-medium">Members</h3>
        {members.isPending && <Loading what="members" />}
        <ErrorMessage error={members.error} prefix="Could not load members" />
        {members.data?.length === 0 && <Empty>No members yet.</Empty>}
        {members.data && members.data.length > 0 && (
          <ul className="divide-y divide-slate-200 text-sm dark:divide-slate-800">
            {members.data.map((m) => (
              <li
                key={m.id}
                data-testid="member-row"
                className="flex flex-wrap items-center gap-3 py-2"
              >
                <span>
                  {m.name} <span className="text-slate-600 dark:text-slate-400">{m.email}</span>
                </span>
                <button
                  type="button"
                  className={`${buttonClass} ml-auto`}
                  disabled={remove.isPending}
                  onClick={() => remove.mutate({ groupId: group.id, userId: m.id })}
                >
                  Remove {m.email ?? m.name}
                </button>
              </li>
            ))}
          </ul>
        )}
        <ErrorMessage error={remove.error} prefix="Could not remove" />
        <form
          className="flex flex-wrap items-end gap-2"
          onSubmit={(e) => {
            e.preventDefault();
            void addByEmail();
          }}
        >
          <label className="flex flex-col gap-1 text-sm">
            Member's email
            <input
              type="email"
              className={`${inputClass} w-72 max-w-full`}
              value={email}
              maxLength={200}
              required
              onChange={(e) => setEmail(e.target.value)}
            />
          </label>
          <button type="submit" className={primaryClass} disabled={add.isPending}>
            Add member
          </button>
        </form>
        {lookupError && (
          <p role="alert" className="text-sm text-red-700 dark:text-red-300">
            {lookupError}
          </p>
        )}
        <ErrorMessage error={add.error} prefix="Could not add" />
      </div>

      <fieldset className="space-y-2">
        <legend className="font-medium">Fleets this group may use</legend>
        <p className="text-xs text-slate-600 dark:text-slate-400">
          Checking a fleet restricts it to its groups; a fleet with no group left is open to every
          researcher.
        </p>
        {fleets.isPending && <Loading what="fleets" />}
        <ErrorMessage error={fleets.error} prefix="Could not load fleets" />
        {fleets.data?.length === 0 && <Empty>No fleets yet.</Empty>}
        <ul className="grid gap-1 sm:grid-cols-2">
          {fleets.data?.map((f) => {
            const current = groupsOfFleet(f.name);
            const checked = current.includes(group.id);
            return (
              <li key={f.id}>
                <label className="inline-flex items-center gap-2 text-sm">
                  <input
                    type="checkbox"
                    checked={checked}
                    disabled={setFleetGroups.isPending || groups.isFetching}
                    onChange={() =>
                      setFleetGroups.mutate({
                        fleetId: f.id,
                        groupIds: checked
                          ? current.filter((id) => id !== group.id)
                          : [...current, group.id],
                      })
                    }
                  />
                  {f.name}
                  {current.length > 0 && !checked && (
                    <span className="text-xs text-slate-500 dark:text-slate-400">
                      (restricted to other groups)
                    </span>
                  )}
                </label>
              </li>
            );
          })}
        </ul>
        <ErrorMessage error={setFleetGroups.error} prefix="Could not change fleet access" />
      </fieldset>
    </section>
  );
}
