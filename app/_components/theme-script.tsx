import { headers } from "next/headers";
import { THEME_BOOT_SCRIPT } from "./theme-boot";

/** The theme's boot script, carrying this response's CSP nonce (set by proxy.ts). */
export async function ThemeScript() {
  const nonce = (await headers()).get("x-nonce") ?? undefined;
  // biome-ignore lint/security/noDangerouslySetInnerHtml: a constant script, no user input
  return <script nonce={nonce} dangerouslySetInnerHTML={{ __html: THEME_BOOT_SCRIPT }} />;
}
