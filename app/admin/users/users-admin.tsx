"use client";

import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { useTRPC } from "@/app/providers";
import { buttonClass, ConfirmButton, Empty, ErrorMessage, inputClass, Loading, When } from "../ui";
import { useUrlFilters } from "../use-url-filters";

const PAGE = 50;

export function UsersAdmin() {
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const [f, setF] = useUrlFilters(["q"] as const);
  const [search, setSearch] = useState(f.q);
  const [offset, setOffset] = useState(0);
  // Search as you type, without a request per keystroke.
  useEffect(() => {
    const t = setTimeout(() => {
      if (search !== f.q) {
        setOffset(0);
        setF({ q: search });
      }
    }, 300);
    return () => clearTimeout(t);
  }, [search, f.q, setF]);
  const users = useQuery({
    ...trpc.user.list.queryOptions({ search: f.q || undefined, limit: PAGE, offset }),
    placeholderData: keepPreviousData,
  });
  const groups = useQuery({ ...trpc.group.list.queryOptions(), refetchOnMount: "always" });
  const me = useQuery(trpc.user.me.queryOptions());
  const refresh = () => queryClient.invalidateQueries();
  const setRole = useMutation(trpc.user.setRole.mutationOptions({ onSettled: refresh }));
  const addMember = useMutation(trpc.group.addMember.mutationOptions({ onSettled: refresh }));
  const removeMember = useMutation(trpc.group.removeMember.mutationOptions({ onSettled: refresh }));
  const [adding, setAdding] = useState<Record<string, string>>({});
  const groupName = new Map(groups.data?.map((g) => [g.id, g.name]));
  const total = users.data?.total ?? 0;

  return (
    <div className="space-y-4">
      <h1 className="text-2xl font-semibold">Users</h1>
      <search>
        <form className="flex flex-wrap items-end gap-3" onSubmit={(e) => e.preventDefault()}>
          <label className="flex flex-col gap-1 text-sm">
            Search by name or email
            <input
              type="search"
              className={`${inputClass} w-72 max-w-full`}
              value={search}
              maxLength={200}
              onChange={(e) => setSearch(e.target.value)}
            />
          </label>
          {users.data && (
            <p className="text-sm text-slate-600 dark:text-slate-400" aria-live="polite">
              {total} {total === 1 ? "user" : "users"}
            </p>
          )}
        </form>
      </search>

      {users.isPending && <Loading what="users" />}
      <ErrorMessage error={users.error} prefix="Could not load users" />
      <ErrorMessage error={groups.error} prefix="Could not load groups" />
      {users.data && users.data.rows.length === 0 && (
        <Empty>{f.q ? `Nobody matches "${f.q}".` : "Nobody has signed in yet."}</Empty>
      )}
      {users.data && users.data.rows.length > 0 && (
        <ul className="divide-y divide-slate-200 rounded-lg border border-slate-200 bg-white dark:divide-slate-800 dark:border-slate-800 dark:bg-slate-900">
          {users.data.rows.map((u) => {
            const who = u.email ?? u.name ?? u.id;
            const isMe = me.data?.id === u.id;
            const roleError = setRole.variables?.userId === u.id ? setRole.error : null;
            const memberError =
              (addMember.variables?.userId === u.id ? addMember.error : null) ??
              (removeMember.variables?.userId === u.id ? removeMember.error : null);
            const choices = groups.data?.filter((g) => !u.groupIds.includes(g.id)) ?? [];
            return (
              <li key={u.id} data-testid="user-row" className="space-y-2 p-4 text-sm">
                <div className="flex flex-wrap items-center gap-x-4 gap-y-1">
                  <p className="font-medium">
                    {u.name ?? "(no name)"}{" "}
                    <span className="font-normal text-slate-600 dark:text-slate-400">
                      {u.email}
                    </span>
                    {isMe && (
                      <span className="ml-1 text-xs text-slate-500 dark:text-slate-400">(you)</span>
                    )}
                  </p>
                  <span
                    data-testid="user-role"
                    className={
                      u.role === "admin"
                        ? "rounded bg-indigo-100 px-2 py-0.5 text-xs font-medium text-indigo-900 dark:bg-indigo-950 dark:text-indigo-200"
                        : "rounded bg-slate-100 px-2 py-0.5 text-xs font-medium text-slate-800 dark:bg-slate-800 dark:text-slate-200"
                    }
                  >
                    {u.role}
                  </span>
                  <span className="text-xs text-slate-600 dark:text-slate-400">
                    Last sign-in: <When at={u.lastSignInAt} />
                  </span>
                  <span className="ml-auto">
                    {u.role === "admin" ? (
                      <ConfirmButton
                        label="Make researcher"
                        accessibleLabel={`Make ${who} a researcher`}
                        question={
                          isMe ? "Remove your own admin rights?" : `Remove ${who}'s admin rights?`
                        }
                        confirmLabel="Demote"
                        danger
                        pending={setRole.isPending}
                        onConfirm={() => setRole.mutate({ userId: u.id, role: "researcher" })}
                      />
                    ) : (
                      <ConfirmButton
                        label="Make admin"
                        accessibleLabel={`Make ${who} an admin`}
                        question={`Give ${who} full admin rights?`}
                        confirmLabel="Promote"
                        pending={setRole.isPending}
                        onConfirm={() => setRole.mutate({ userId: u.id, role: "admin" })}
                      />
                    )}
                  </span>
                </div>
                <ErrorMessage error={roleError} />
                <div className="flex flex-wrap items-center gap-2">
                  <span className="text-slate-600 dark:text-slate-400">Groups:</span>
                  {u.groupIds.length === 0 && (
                    <span className="text-slate-500 dark:text-slate-400">none</span>
                  )}
                  {u.groupIds.map((gid) => (
                    <span
                      key={gid}
                      className="inline-flex items-center gap-1 rounded-full border border-slate-300 py-0.5 pr-1 pl-2 text-xs dark:border-slate-700"
                    >
                      {groupName.get(gid) ?? "…"}
                      <button
                        type="button"
                        aria-label={`Remove ${who} from ${groupName.get(gid) ?? "group"}`}
                        className="rounded-full px-1 hover:bg-slate-200 dark:hover:bg-slate-700"
                        disabled={removeMember.isPending}
                        onClick={() => removeMember.mutate({ groupId: gid, userId: u.id })}
                      >
                        ×
                      </button>
                    </span>
                  ))}
                  {choices.length > 0 && (
                    <span className="inline-flex items-center gap-1">
                      <label htmlFor={`add-${u.id}`} className="sr-only">
                        Group to add {who} to
                      </label>
                      <select
                        id={`add-${u.id}`}
                        className={`${inputClass} py-0.5 text-xs`}
                        value={adding[u.id] ?? ""}
                        onChange={(e) => setAdding({ ...adding, [u.id]: e.target.value })}
                      >
                        <option value="">Add to group…</option>
                        {choices.map((g) => (
                          <option key={g.id} value={g.id}>
                            {g.name}
                          </option>
                        ))}
                      </select>
                      <button
                        type="button"
                        className={`${buttonClass} py-0.5 text-xs`}
                        disabled={!adding[u.id] || addMember.isPending}
                        aria-label={`Add ${who} to the chosen group`}
                        onClick={() => {
                          const groupId = adding[u.id];
                          if (groupId) addMember.mutate({ groupId, userId: u.id });
                          setAdding({ ...adding, [u.id]: "" });
                        }}
                      >
                        Add
                      </button>
                    </span>
                  )}
                </div>
                <ErrorMessage error={memberError} />
              </li>
            );
          })}
        </ul>
      )}
      {total > PAGE && (
        <div className="flex items-center gap-2 text-sm">
          <button
            type="button"
            className={buttonClass}
            disabled={offset === 0}
            onClick={() => setOffset(Math.max(0, offset - PAGE))}
          >
            Previous
          </button>
          <span>
            {offset + 1}–{Math.min(offset + PAGE, total)} of {total}
          </span>
          <button
            type="button"
            className={buttonClass}
            disabled={offset + PAGE >= total}
            onClick={() => setOffset(offset + PAGE)}
          >
            Next
          </button>
        </div>
      )}
    </div>
  );
}
