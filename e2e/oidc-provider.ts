import http from "node:http";
import Provider from "oidc-provider";

/**
 * A real OpenID provider (`oidc-provider`, development login and consent pages) on loopback for
 * the browser tests. The app under test is configured with it in playwright.config.ts.
 */
const APP_PORT = Number(process.env.LABLINK_E2E_PORT ?? 3100);
export const OIDC_PORT = Number(process.env.LABLINK_E2E_OIDC_PORT ?? APP_PORT + 1);
export const OIDC_ISSUER = `http://127.0.0.1:${OIDC_PORT}`;
export const OIDC_CLIENT = { id: "lablink-e2e", secret: "lablink-e2e-client-secret" };

/** Starts the provider; any login is accepted, `<name>` gets the email `<name>@example.edu`. */
export async function startOidcProvider(): Promise<() => Promise<void>> {
  const provider = new Provider(OIDC_ISSUER, {
    clients: [
      {
        client_id: OIDC_CLIENT.id,
        client_secret: OIDC_CLIENT.secret,
        redirect_uris: [`http://127.0.0.1:${APP_PORT}/api/auth/callback/oidc`],
        grant_types: ["authorization_code"],
        response_types: ["code"],
      },
    ],
    async findAccount(_ctx: unknown, sub: string) {
      return {
        accountId: sub,
        async claims() {
          const email = sub.includes("@") ? sub : `${sub}@example.edu`;
          return { sub, email, email_verified: true, name: sub.split("@")[0] };
        },
      };
    },
    claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
    cookies: { keys: ["lablink-e2e-oidc-cookie-key"] },
    features: { devInteractions: { enabled: true } },
  });
  const server = http.createServer(provider.callback());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(OIDC_PORT, "127.0.0.1", resolve);
  });
  return () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
}
