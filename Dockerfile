# deploy-agent as a container. Run with host networking and the Docker socket, e.g.:
#   docker run -d --name deploy-agent --init --network host \
#     --group-add "$(stat -c %g /var/run/docker.sock)" -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /etc/deploy-agent:/etc/deploy-agent:ro -v /var/lib/deploy-agent:/var/lib/deploy-agent \
#     -v /var/backups/deploy-agent:/var/backups/deploy-agent deploy-agent
# Build (`npm ci` fetches from the npm registry; with host networking where bridges are off):
#   docker build --network host -t deploy-agent .
# Any base with Node ≥ 20.19, npm and a POSIX sh works: `--build-arg BASE=<image> --build-arg APT_PACKAGES=` for one
# without apt (the agent then lacks git and pg_dump unless the base has them). The test builds it that way.
ARG BASE=node:20-bookworm-slim

# Production dependencies only.
FROM ${BASE} AS deps
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# The compiled agent: the image runs dist/ only, never the TypeScript sources through a loader.
FROM ${BASE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY agent ./agent
RUN npm run build

FROM ${BASE}
# git: fetch + archive of app repos; postgresql-client: pg_dump/pg_restore (15, as in bookworm).
ARG APT_PACKAGES="git postgresql-client ca-certificates"
RUN if [ -n "$APT_PACKAGES" ]; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $APT_PACKAGES \
      && rm -rf /var/lib/apt/lists/*; \
    fi
# A numeric user written straight into passwd/group: no useradd needed in the base, and git/ssh still find a name
# and a home for uid 10001.
RUN echo 'deploy-agent:x:10001:10001:deploy-agent:/var/lib/deploy-agent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'deploy-agent:x:10001:' >> /etc/group \
 && mkdir -p /var/lib/deploy-agent /var/backups/deploy-agent /etc/nginx/deploy-agent \
 && chown 10001:10001 /var/lib/deploy-agent /var/backups/deploy-agent /etc/nginx/deploy-agent \
 && chmod 0750 /var/lib/deploy-agent /var/backups/deploy-agent

WORKDIR /app
ENV NODE_ENV=production HOME=/var/lib/deploy-agent
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY --from=build /app/dist ./dist
COPY config ./config

# Run with --init so the children the agent spawns are reaped.
USER 10001:10001
VOLUME ["/var/lib/deploy-agent", "/var/backups/deploy-agent"]
EXPOSE 8787
# The port follows DEPLOY_AGENT_LISTEN_PORT when the agent is told to listen elsewhere.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.DEPLOY_AGENT_LISTEN_PORT || 8787}/healthz`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# As the systemd unit: a 2 MB young generation, ~7 MB less idle RSS.
ENV NODE_OPTIONS=--max-semi-space-size=2
ENTRYPOINT ["node", "bin/deploy-agent.js"]
CMD ["serve", "--config", "/etc/deploy-agent/agent.yaml"]
