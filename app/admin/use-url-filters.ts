"use client";

import { usePathname, useRouter, useSearchParams } from "next/navigation";
import { useCallback, useMemo } from "react";

/**
 * Filters kept in the URL's query string, so a filtered view can be bookmarked and shared.
 * Empty values are left out of the URL. Pages using this wrap it in <Suspense>.
 */
export function useUrlFilters<K extends string>(keys: readonly K[]) {
  const params = useSearchParams();
  const router = useRouter();
  const pathname = usePathname();
  const query = params.toString();
  // biome-ignore lint/correctness/useExhaustiveDependencies: keys is a constant list
  const values = useMemo(() => {
    const p = new URLSearchParams(query);
    return Object.fromEntries(keys.map((k) => [k, p.get(k) ?? ""])) as Record<K, string>;
  }, [query]);
  const set = useCallback(
    (next: Partial<Record<K, string>>) => {
      const p = new URLSearchParams(query);
      for (const [k, v] of Object.entries(next) as [K, string | undefined][]) {
        if (v) p.set(k, v);
        else p.delete(k);
      }
      const qs = p.toString();
      router.replace(qs ? `${pathname}?${qs}` : pathname, { scroll: false });
    },
    [query, pathname, router],
  );
  return [values, set] as const;
}
