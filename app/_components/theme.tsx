"use client";

import { useEffect, useState } from "react";
import { THEME_KEY, type ThemeChoice } from "./theme-boot";

const systemDark = () => window.matchMedia("(prefers-color-scheme: dark)");

function stored(): ThemeChoice {
  try {
    const t = localStorage.getItem(THEME_KEY);
    return t === "light" || t === "dark" ? t : "system";
  } catch {
    return "system";
  }
}

function apply(choice: ThemeChoice) {
  const dark = choice === "dark" || (choice === "system" && systemDark().matches);
  document.documentElement.classList.toggle("dark", dark);
  document.documentElement.dataset.theme = choice;
}

/** System / Light / Dark, remembered in this browser. */
export function ThemeToggle() {
  const [choice, setChoice] = useState<ThemeChoice>("system");

  useEffect(() => setChoice(stored()), []);

  // While following the system, follow its changes too.
  useEffect(() => {
    if (choice !== "system") return;
    const mq = systemDark();
    const onChange = () => apply("system");
    mq.addEventListener("change", onChange);
    return () => mq.removeEventListener("change", onChange);
  }, [choice]);

  const choose = (next: ThemeChoice) => {
    setChoice(next);
    try {
      if (next === "system") localStorage.removeItem(THEME_KEY);
      else localStorage.setItem(THEME_KEY, next);
    } catch {
      // Private mode without storage: the theme still applies to this page.
    }
    apply(next);
  };

  return (
    <label className="flex items-center gap-1 text-sm">
      <span className="sr-only">Theme</span>
      <select
        data-testid="theme-select"
        value={choice}
        onChange={(e) => choose(e.target.value as ThemeChoice)}
        className="rounded border border-slate-300 bg-white px-1.5 py-1 text-slate-900 dark:border-slate-700 dark:bg-slate-900 dark:text-slate-100"
      >
        <option value="system">System</option>
        <option value="light">Light</option>
        <option value="dark">Dark</option>
      </select>
    </label>
  );
}
