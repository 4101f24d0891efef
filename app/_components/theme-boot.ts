/** Where the chosen theme is kept (this browser only); absent: follow the system setting. */
export const THEME_KEY = "lablink-theme";
export type ThemeChoice = "system" | "light" | "dark";

/**
 * Runs before the page paints (an inline script in <head>, allowed by the page's CSP nonce):
 * sets `dark` on <html> from the stored choice or the system setting, so no page flashes the
 * wrong theme. Kept tiny and free of dependencies; theme.tsx's apply() does the same after load.
 */
export const THEME_BOOT_SCRIPT = `(function(){try{var t=localStorage.getItem("${THEME_KEY}");var d=t==="dark"||(t!=="light"&&matchMedia("(prefers-color-scheme: dark)").matches);document.documentElement.classList.toggle("dark",d);document.documentElement.dataset.theme=t==="dark"||t==="light"?t:"system"}catch(e){}})()`;
