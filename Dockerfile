# syntax=docker/dockerfile:1
# The LabLink server: one image for the web app, the worker and migrations.
#   docker build -t lablink-server .
#   docker run lablink-server                      # web (default), port 3000, health at /api/health
#   docker run lablink-server npm run worker       # the job runner (Terraform, sweeps, reminders)
#   docker run lablink-server npm run db:migrate   # once per release, before web and worker
# compose.yaml runs all three with Postgres and Caddy; docs/operations.md explains the settings.

FROM node:22-bookworm-slim AS deps
WORKDIR /app
ENV NEXT_TELEMETRY_DISABLED=1
COPY package.json package-lock.json ./
COPY agent/package.json agent/package.json
RUN npm ci --no-audit --no-fund

FROM deps AS build
COPY . .
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:22-bookworm-slim AS runtime
# Terraform for the worker's terraform fleets (the version the module was written for).
ARG TERRAFORM_VERSION=1.9.8
RUN apt-get update \
  && apt-get install -y --no-install-recommends ca-certificates curl unzip \
  && curl -fsSLo /tmp/tf.zip "https://releases.hashicorp.com/terraform/${TERRAFORM_VERSION}/terraform_${TERRAFORM_VERSION}_linux_amd64.zip" \
  && unzip /tmp/tf.zip terraform -d /usr/local/bin \
  && rm -rf /tmp/tf.zip /var/lib/apt/lists/* \
  && groupadd --system lablink \
  && useradd --system --gid lablink --home-dir /app --shell /usr/sbin/nologin lablink \
  && mkdir -p /var/lib/lablink && chown lablink:lablink /var/lib/lablink
WORKDIR /app
ENV NODE_ENV=production \
    NEXT_TELEMETRY_DISABLED=1 \
    HOST=0.0.0.0 \
    PORT=3000 \
    LABLINK_DATA_DIR=/var/lib/lablink
# The application is owned by root and read-only to the process; only its data folder is writable.
COPY --from=build /app /app
RUN mkdir -p /app/.next/cache && chown lablink:lablink /app/.next/cache
USER lablink
VOLUME /var/lib/lablink
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.PORT}/api/health`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
CMD ["npm", "run", "web"]
