import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./server/db/schema/index.ts",
  out: "./drizzle",
  // Only `generate` uses this file; migrations are applied by server/db/migrate.ts.
  dbCredentials: { url: process.env.DATABASE_URL ?? "postgres://localhost/lablink" },
});
