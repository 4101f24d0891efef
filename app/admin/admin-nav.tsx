"use client";

import Link from "next/link";
import { usePathname } from "next/navigation";

const ITEMS = [
  {
    href: "/admin",
    label: "Dashboard",
    match: (p: string) => p === "/admin" || p.startsWith("/admin/vms"),
  },
  { href: "/admin/fleets", label: "Fleets" },
  { href: "/admin/bookings", label: "Bookings" },
  { href: "/admin/operations", label: "Operations" },
  { href: "/admin/audit", label: "Audit" },
  { href: "/admin/usage", label: "Usage" },
  { href: "/admin/users", label: "Users" },
  { href: "/admin/groups", label: "Groups" },
  { href: "/admin/enrollment", label: "Enrollment" },
  { href: "/admin/webhooks", label: "Webhooks" },
] as const;

/** The admin pages' navigation; the page being shown is marked with aria-current. */
export function AdminNav() {
  const pathname = usePathname() ?? "";
  return (
    <nav aria-label="Admin" className="-mx-4 overflow-x-auto px-4">
      <ul className="flex min-w-max gap-1 border-b border-slate-200 dark:border-slate-800">
        {ITEMS.map((item) => {
          const current =
            "match" in item
              ? item.match(pathname)
              : pathname === item.href || pathname.startsWith(`${item.href}/`);
          return (
            <li key={item.href}>
              <Link
                href={item.href}
                aria-current={current ? "page" : undefined}
                className="-mb-px block border-b-2 border-transparent px-3 py-2 text-sm text-slate-700 hover:text-slate-950 aria-[current=page]:border-indigo-600 aria-[current=page]:font-semibold aria-[current=page]:text-indigo-800 dark:text-slate-300 dark:hover:text-white dark:aria-[current=page]:border-indigo-400 dark:aria-[current=page]:text-indigo-200"
              >
                {item.label}
              </Link>
            </li>
          );
        })}
      </ul>
    </nav>
  );
}
