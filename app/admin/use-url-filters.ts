"use client";

import { usePathname, useSearchParams } from "next/navigation";
import { useCallback, useEffect, useState } from "react";

function read<K extends string>(keys: readonly K[], query: string): Record<K, string> {
  const p = new URLSearchParams(query);
  return Object.fromEntries(keys.map((k) => [k, p.get(k) ?? ""])) as Record<K, string>;
}

/**
 * Filters kept in the URL's query string, so a filtered view can be bookmarked and shared.
 * The filters live in state (the list reacts at once) and are written to the address bar with
 * history.replaceState, which Next's router observes without a server round trip; a link to
 * the same page with other filters is picked up from useSearchParams. Empty values are left out
 * of the URL. Pages using this wrap it in <Suspense>.
 */
export function useUrlFilters<K extends string>(keys: readonly K[]) {
  const params = useSearchParams();
  const pathname = usePathname();
  const query = params.toString();
  const [values, setValues] = useState(() => read(keys, query));
  // biome-ignore lint/correctness/useExhaustiveDependencies: keys is a constant list
  useEffect(() => setValues(read(keys, query)), [query]);
  const set = useCallback(
    (next: Partial<Record<K, string>>) => {
      setValues((prev) => ({ ...prev, ...next }));
      const p = new URLSearchParams(window.location.search);
      for (const [k, v] of Object.entries(next) as [K, string | undefined][]) {
        if (v) p.set(k, v);
        else p.delete(k);
      }
      const qs = p.toString();
      window.history.replaceState(null, "", qs ? `${pathname}?${qs}` : pathname);
    },
    [pathname],
  );
  return [values, set] as const;
}
